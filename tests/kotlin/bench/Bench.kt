// The Kotlin half of the FFI benchmark (tests/benches/ffi.rs): the same calls as the
// Rust half, in the same order, through the generated bindings (JNA, RustBuffer
// serialisation, Kotlin objects), on the same encrypted store file.
//
// Arguments: STORE_PATH KEY_HEX ITERATIONS WARMUP
// Prints one line per measurement, which the Rust half reads:
//   bench NAME rows=R calls=C samples=N median_ns=M p10_ns=A p90_ns=B

import app.doorstep.core.DoorstepStore
import app.doorstep.core.HouseholdFilter
import app.doorstep.core.SyncCancel
import kotlin.system.exitProcess

private fun hexBytes(hex: String): ByteArray =
    ByteArray(hex.length / 2) { hex.substring(2 * it, 2 * it + 2).toInt(16).toByte() }

/** Lists every household in pages of `page`: the rows and the calls it took. */
private fun listAll(store: DoorstepStore, page: Int): Pair<Int, Int> {
    var rows = 0
    var calls = 0
    while (true) {
        val got = store.households(HouseholdFilter(null, null, rows.toUInt(), page.toUInt()))
        calls++
        rows += got.size
        // Touch what the app would show, so nothing is optimised away.
        if (got.isNotEmpty() && got.last().headName.isEmpty()) throw IllegalStateException("no head")
        if (got.size < page) return rows to calls
    }
}

private fun report(name: String, rows: Int, calls: Int, samples: LongArray) {
    samples.sort()
    val at = { q: Double -> samples[((samples.size - 1) * q).toInt()] }
    println("bench $name rows=$rows calls=$calls samples=${samples.size} median_ns=${at(0.5)} p10_ns=${at(0.1)} p90_ns=${at(0.9)}")
}

fun main(args: Array<String>) {
    if (args.size != 4) {
        System.err.println("usage: BenchKt STORE_PATH KEY_HEX ITERATIONS WARMUP")
        exitProcess(2)
    }
    val iterations = args[2].toInt()
    val warmup = args[3].toInt()
    val store = DoorstepStore.open(args[0], hexBytes(args[1]))

    for (page in listOf(100, 500)) {
        var shape = 0 to 0
        // JIT warm-up: the same calls, not timed.
        repeat(warmup) { shape = listAll(store, page) }
        val samples = LongArray(iterations) {
            val t = System.nanoTime()
            shape = listAll(store, page)
            System.nanoTime() - t
        }
        report("households_page_$page", shape.first, shape.second, samples)
    }

    // The fixed cost of a call: deviceId() (a lock and a 36-character string back), in
    // blocks of 1,000 calls; the sample is the time per call.
    val block = 1000
    var sink = 0
    repeat(warmup * 20) { sink += store.deviceId().length }
    val perCall = LongArray(iterations) {
        val t = System.nanoTime()
        repeat(block) { sink += store.deviceId().length }
        (System.nanoTime() - t) / block
    }
    if (sink == 0) throw IllegalStateException("no device ID")
    report("device_id", 0, 1, perCall)

    // The least a call costs: SyncCancel.isCancelled(), a boolean back, no lock and no
    // buffer to free.
    val cancel = SyncCancel()
    var set = 0
    repeat(warmup * 20) { if (cancel.isCancelled()) set++ }
    val bare = LongArray(iterations) {
        val t = System.nanoTime()
        repeat(block) { if (cancel.isCancelled()) set++ }
        (System.nanoTime() - t) / block
    }
    if (set != 0) throw IllegalStateException("cancelled")
    report("is_cancelled", 0, 1, bare)
    cancel.close()
    store.close()
}
