// An app's use of the generated Java bindings, run by jni_test.go against
// a real `deltasync serve`: open with a token provider, sync, query, edit,
// follow status and changes, switch offline mode, sync in the background,
// wipe. Any check that fails prints "FAIL <what>" and exits 1.
//
// The test and this program take turns over stdin/stdout: the program
// prints a step name and waits for a line back once the test has changed
// the server's data.

import io.deltasync.mobile.*;

import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

public class DeltasyncCheck {
	static final List<String> states = Collections.synchronizedList(new ArrayList<>());
	static final BlockingQueue<Change> changes = new LinkedBlockingQueue<>();
	static BufferedReader in;

	static void check(boolean ok, String what) {
		if (!ok) {
			System.out.println("FAIL " + what);
			System.out.flush();
			System.exit(1);
		}
	}

	static Change nextChange(String what) throws InterruptedException {
		Change c = changes.poll(120, TimeUnit.SECONDS);
		check(c != null, "no change event for " + what);
		return c;
	}

	static List<String> keys(Change c) {
		List<String> out = new ArrayList<>();
		for (long i = 0; i < c.keyCount(); i++) {
			out.add(c.key(i));
		}
		return out;
	}

	static String text(byte[] b) {
		return b == null ? null : new String(b, StandardCharsets.UTF_8);
	}

	// step tells the test where we are and waits for its answer.
	static void step(String name) throws Exception {
		System.out.println("STEP " + name);
		System.out.flush();
		String line = in.readLine();
		check("GO".equals(line), "the test answered " + line + " to " + name);
	}

	public static void main(String[] args) throws Exception {
		String dir = args[0], url = args[1], token = args[2];
		in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
		AtomicInteger asked = new AtomicInteger();

		Config cfg = Mobile.newConfig();
		cfg.setServerURL(url);
		cfg.setTokenProvider(() -> {
			asked.incrementAndGet();
			return token;
		});
		cfg.setCallTimeoutMillis(120000);
		cfg.setLongPollSeconds(5);
		Client client = Mobile.open(dir, cfg);
		client.addStatusListener(s -> states.add(s.getState() + "/" + s.getReason()));
		client.addChangeListener(changes::add);

		// Offline mode before the first sync: refused, with a code.
		try {
			client.setOfflineMode(true);
			check(false, "offline mode was accepted before a sync");
		} catch (Exception e) {
			check(Mobile.CodeNotSynced.equals(Mobile.errorCode(e)), "offline mode refused with " + Mobile.errorCode(e) + ": " + e.getMessage());
		}
		check(!client.offlineMode(), "offline mode on after the refusal");

		// The first sync: a full one, three records, listed.
		SyncResult r = client.sync();
		check(r.getVersion() == 1 && r.getFull(), "first sync: version " + r.getVersion() + ", full " + r.getFull());
		Change c = nextChange("the first sync");
		check(c.getSource().equals(Mobile.ChangeServer) && c.getFull() && c.getTotal() == 3
				&& keys(c).equals(Arrays.asList("tasks/1", "tasks/2", "tasks/3")), "first sync change: " + keys(c));
		Status s = client.status();
		check(s.getState().equals(Mobile.StateSynced) && s.getLocalVersion() == 1 && s.getLastSyncedUnix() > 0,
				"status after the first sync: " + s.getState() + " v" + s.getLocalVersion());
		check(asked.get() == 1, "token provider asked " + asked.get() + " times");

		// Queries.
		check("{\"s\":\"open\"}".equals(text(client.get("tasks/2"))), "get tasks/2: " + text(client.get("tasks/2")));
		check(client.get("tasks/9") == null, "get of a missing key is not null");
		Records page = client.scan("tasks/", "", 2);
		check(page.len() == 2 && page.getMore() && page.getLast().equals("tasks/2"), "first page: " + page.len() + " " + page.getLast());
		Records rest = client.scan("tasks/", page.getLast(), 2);
		check(rest.len() == 1 && !rest.getMore() && rest.key(0).equals("tasks/3"), "second page");
		check(client.count("tasks/") == 3, "count " + client.count("tasks/"));
		KeyList kl = Mobile.newKeyList();
		kl.add("tasks/1");
		kl.add("nope/1");
		Records many = client.getMany(kl);
		check(many.len() == 2 && many.found(0) && !many.found(1) && many.value(1) == null, "getMany");
		try {
			client.put("", "1".getBytes(StandardCharsets.UTF_8));
			check(false, "an empty key was accepted");
		} catch (Exception e) {
			check(Mobile.CodeInvalid.equals(Mobile.errorCode(e)), "empty key refused with " + Mobile.errorCode(e));
		}

		// A one-record edit on the server: exactly its key.
		step("edit-one");
		r = client.sync();
		c = nextChange("the server edit");
		check(c.getSource().equals(Mobile.ChangeServer) && !c.getFull() && c.getVersion() == 2
				&& keys(c).equals(Arrays.asList("tasks/2")) && c.collectionCount() == 1
				&& c.collectionName(0).equals("tasks") && c.collectionChanges(0) == 1, "server edit change: " + keys(c));

		// A local put: its key at once; synced, the server has it.
		client.put("tasks/4", "{\"s\":\"from java\"}".getBytes(StandardCharsets.UTF_8));
		c = nextChange("the local put");
		check(c.getSource().equals(Mobile.ChangeLocal) && keys(c).equals(Arrays.asList("tasks/4")), "local put change: " + keys(c));
		check(client.status().getPendingEdits() == 1, "pending edits " + client.status().getPendingEdits());
		r = client.sync();
		check(r.getEditsApplied() == 1 && r.getPending() == 0 && r.getVersion() == 3, "sync of the put: applied " + r.getEditsApplied() + " v" + r.getVersion());
		c = nextChange("the version holding the put");
		check(keys(c).equals(Arrays.asList("tasks/4")), "pulled put change: " + keys(c));

		// Offline mode, now that a sync completed.
		client.setOfflineMode(true);
		s = client.status();
		check(s.getState().equals(Mobile.StateOffline) && s.getReason().equals(Mobile.ReasonOfflineMode), "offline status " + s.getState() + "/" + s.getReason());
		try {
			client.sync();
			check(false, "sync in offline mode");
		} catch (Exception e) {
			check(Mobile.CodeOfflineMode.equals(Mobile.errorCode(e)), "sync in offline mode failed with " + Mobile.errorCode(e));
		}
		client.setOfflineMode(false);

		// Background sync: a 500-record insert arrives by long poll,
		// counted per collection.
		client.start();
		step("insert-500");
		c = nextChange("the 500-record insert");
		check(c.getSource().equals(Mobile.ChangeServer) && c.getTotal() == 500 && c.keyCount() == 0
				&& c.collectionCount() == 2 && c.collectionName(0).equals("forms") && c.collectionChanges(0) == 300
				&& c.collectionName(1).equals("photos") && c.collectionChanges(1) == 200,
				"500-record insert change: total " + c.getTotal() + ", " + c.collectionCount() + " collections");
		client.stop();
		check(client.count("") == 504, "count after the insert " + client.count(""));
		check(states.contains(Mobile.StateSynced + "/"), "the status listener never saw synced: " + states);

		// Sign-out on a shared device.
		client.wipe(false);
		check(!new File(dir).exists(), "state directory after wipe");
		try {
			client.get("tasks/1");
			check(false, "get after wipe");
		} catch (Exception e) {
			check(Mobile.CodeClosed.equals(Mobile.errorCode(e)), "get after wipe failed with " + Mobile.errorCode(e));
		}
		System.out.println("OK");
		System.out.flush();
		// Go threads that called into Java (the listeners, the token
		// provider) stay attached to the JVM as non-daemon threads
		// (gobind's glue uses AttachCurrentThread), so the JVM would wait
		// for them forever once main returns: an app process never ends
		// that way on Android, a command-line program must exit.
		System.exit(0);
	}
}
