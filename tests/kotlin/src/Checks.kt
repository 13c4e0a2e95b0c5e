// A tiny check runner for the JVM tests of the generated bindings: one line per check,
// a closing line `kotlin: N passed, M failed`, exit code 1 on any failure. No JUnit:
// the Rust test (tests/tests/kotlin/mod.rs) runs `main` and reads its output.

import app.doorstep.core.DoorstepException
import kotlin.system.exitProcess

class CheckFailed(message: String) : Exception(message)

object Checks {
    private var passed = 0
    private var failed = 0

    /** Runs one check; a thrown exception fails it and the run goes on. */
    fun check(name: String, body: () -> Unit) {
        val started = System.nanoTime()
        try {
            body()
            passed++
            println("ok   $name (${(System.nanoTime() - started) / 1_000_000} ms)")
        } catch (e: Throwable) {
            failed++
            println("FAIL $name: ${describe(e)}")
            if (e !is CheckFailed) e.printStackTrace(System.out)
        }
        System.out.flush()
    }

    /** Runs a check whose result later checks need; when it fails the run stops here. */
    fun <T : Any> must(name: String, body: () -> T): T {
        var result: T? = null
        check(name) { result = body() }
        return result ?: finish()
    }

    /** Prints the closing line and exits: 0 when every check passed, else 1. */
    fun finish(): Nothing {
        println("kotlin: $passed passed, $failed failed")
        System.out.flush()
        exitProcess(if (failed == 0 && passed > 0) 0 else 1)
    }

    private fun describe(e: Throwable): String = when (e) {
        is DoorstepException -> "${e::class.simpleName} code=${e.code()} detail=${e.detail()}"
        else -> "${e::class.simpleName}: ${e.message}"
    }
}

fun expect(condition: Boolean, what: () -> String) {
    if (!condition) throw CheckFailed(what())
}

fun <T> expectEq(actual: T, expected: T, what: String) {
    if (actual != expected) throw CheckFailed("$what: expected <$expected>, got <$actual>")
}

/** Runs `body`, which must throw a [DoorstepException] of type [E]; returns it. */
inline fun <reified E : DoorstepException> expectThrows(body: () -> Unit): E {
    try {
        body()
    } catch (e: DoorstepException) {
        if (e is E) return e
        throw CheckFailed(
            "expected ${E::class.simpleName}, got ${e::class.simpleName} (${e.code()}: ${e.detail()})",
        )
    }
    throw CheckFailed("expected ${E::class.simpleName}, but the call succeeded")
}

/** Whether `text` holds a CJK ideograph: the worker's sentence is in Chinese. */
fun hasChinese(text: String): Boolean = text.any { it in '\u4e00'..'\u9fff' }

/**
 * The code and the sentence of an error, as the app would branch and show: Chinese, with
 * no English in it (format names aside) unless after 技术信息 (technical details).
 */
fun expectError(e: DoorstepException, code: String) {
    expectEq(e.code(), code, "code()")
    val detail = e.detail()
    expect(hasChinese(detail)) { "detail() is not Chinese: $detail" }
    val shown = detail.substringBefore("技术信息").replace(Regex("JPEG|PNG|HEIC"), "")
    expect(!Regex("[A-Za-z]{3,}").containsMatchIn(shown)) { "detail() has English in it: $detail" }
    println("     $code: $detail")
}
