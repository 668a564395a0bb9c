// gobind's go.Seq names android.content.Context in Seq.setContext, which
// only Android apps call; on a Linux JVM this empty class lets it compile.
package android.content;

public class Context {
}
