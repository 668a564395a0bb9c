# syntax=docker/dockerfile:1
# Multi-stage build: a static deltasync binary on an empty base image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/deltasync ./cmd/deltasync

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/deltasync /usr/local/bin/deltasync
EXPOSE 8080
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/deltasync"]
CMD ["serve", "--addr", "0.0.0.0:8080"]
