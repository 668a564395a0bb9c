package server

import "github.com/prometheus/client_golang/prometheus"

// backendMetrics are the metrics of what the server does for the app's
// backend: admin patches, feed consumers, webhooks, write validation.
type backendMetrics struct {
	adminPatches *prometheus.CounterVec // outcome

	// Per consumer (org, consumer); set by the feed worker that holds the
	// lease, so on one replica at a time.
	consumerLagEntries *prometheus.GaugeVec
	consumerLagSeconds *prometheus.GaugeVec
	consumerStale      *prometheus.GaugeVec
	workerLeader       prometheus.Gauge

	webhookDeliveries *prometheus.CounterVec // org, outcome
	validations       *prometheus.CounterVec // outcome
}

func newBackendMetrics(reg prometheus.Registerer) *backendMetrics {
	consumer := []string{"org", "consumer"}
	m := &backendMetrics{
		adminPatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deltasync_admin_patches_total",
			Help: "Admin patches per user (a fan-out counts each user), by outcome: applied, unchanged, duplicate, failed.",
		}, []string{"outcome"}),
		consumerLagEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "deltasync_feed_consumer_lag_entries",
			Help: "Change feed entries of the consumer's org after its acknowledged cursor (counted up to a bound), on the replica holding the feed-worker lease.",
		}, consumer),
		consumerLagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "deltasync_feed_consumer_lag_seconds",
			Help: "Age of the oldest change feed entry the consumer has not acknowledged (0 when caught up).",
		}, consumer),
		consumerStale: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "deltasync_feed_consumer_stale",
			Help: "1 if the consumer has entries waiting and has not acknowledged for longer than --consumer-stale; gc keeps its entries all the same.",
		}, consumer),
		workerLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "deltasync_feed_worker_leader",
			Help: "1 while this replica holds the deployment's feed-worker lease (webhook delivery, consumer lag).",
		}),
		webhookDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deltasync_webhook_deliveries_total",
			Help: "Webhook delivery attempts, by org and outcome (ok, failed).",
		}, []string{"org", "outcome"}),
		validations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deltasync_validation_requests_total",
			Help: "Requests to orgs' validation URLs, by outcome: ok, down_wait (the patch was refused with 503), down_pass (it applied unvalidated).",
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.adminPatches, m.consumerLagEntries, m.consumerLagSeconds, m.consumerStale,
		m.workerLeader, m.webhookDeliveries, m.validations)
	return m
}
