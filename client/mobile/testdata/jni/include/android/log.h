// The one Android header the gobind JNI glue (seq_android.c) includes, for
// a Linux JVM: its log calls go to stderr. jni_test.go builds the glue
// against this and the JDK's jni.h.
#ifndef DELTASYNC_ANDROID_LOG_SHIM_H
#define DELTASYNC_ANDROID_LOG_SHIM_H

#include <stdarg.h>
#include <stdio.h>

#define ANDROID_LOG_INFO 4
#define ANDROID_LOG_FATAL 7

static inline int __android_log_print(int prio, const char *tag, const char *fmt, ...) {
	va_list ap;
	int n;
	(void)prio;
	va_start(ap, fmt);
	fprintf(stderr, "%s: ", tag);
	n = vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return n;
}

#endif
