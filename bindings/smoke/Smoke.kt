// A JVM smoke run of the generated Kotlin bindings (scripts/gen-bindings.sh with KOTLINC set):
// key mode on a temporary home, a backup with progress observed, the listing, a wrong key on a
// second home raising ChatvaultException.WrongKey, a restore with the right key. Exits non-zero
// on any mismatch.
import uniffi.chatvault.*
import java.io.File
import kotlin.system.exitProcess

class Count : ProgressListener {
    var calls = 0
    override fun onProgress(doneBytes: ULong, totalBytes: ULong, currentPath: String) { calls++ }
}

fun check(ok: Boolean, what: String) {
    if (!ok) { System.err.println("smoke: FAILED: $what"); exitProcess(1) }
}

fun main(args: Array<String>) {
    val root = File(args[0])
    val chats = File(root, "chats").apply { mkdirs() }
    File(chats, "msgstore.txt").writeText("hello from kotlin\n")
    val repo = File(root, "repo").path
    val phone = Device(File(root, "phone-a").path)
    check(phone.status().mode == "off", "a new home is off")
    val key = phone.enableWithKey(repo)
    val count = Count()
    val info = phone.backupNow(listOf(chats.path), count, CancelToken())
    check(info.files == 1UL && count.calls > 0, "backup with progress: $info, ${count.calls} calls")
    check(phone.snapshots().map { it.id } == listOf(info.id), "listing")
    val other = Device(File(root, "phone-b").path)
    try {
        other.restoreWithKey(repo, "0".repeat(64), "latest", File(root, "x").path)
        check(false, "a wrong key restored")
    } catch (e: ChatvaultException.WrongKey) {
        check(e.detail.isNotEmpty(), "WrongKey carries a detail")
    }
    val r = other.restoreWithKey(repo, key, "latest", File(root, "restored").path)
    check(r.snapshotId == info.id, "restore with the key")
    check(File(root, "restored/chats/msgstore.txt").readText() == "hello from kotlin\n", "content")
    println("smoke: ok (${count.calls} progress calls, snapshot ${info.id.take(8)})")
}
