// Signatures as a finger draws them on the pad: three character-like clusters (a box with
// a cross, a 大, a 王 with a hook) on a 360 x 160 dp pad, sampled every ~8 ms with pressure,
// with a little tremor; the shape of the core's own sample signature in
// core/src/media/signature.rs.

import app.doorstep.core.PadPoint
import app.doorstep.core.SignaturePad
import kotlin.math.PI
import kotlin.math.hypot
import kotlin.math.sin

private typealias Ctrl = List<Pair<Float, Float>>

private val glyphs: List<List<Pair<Ctrl, Int>>> = listOf(
    listOf(
        listOf(0.15f to 0.25f, 0.2f to 0.8f) to 12,
        listOf(0.15f to 0.25f, 0.85f to 0.25f, 0.8f to 0.8f) to 24,
        listOf(0.2f to 0.78f, 0.8f to 0.78f) to 12,
        listOf(0.5f to 0.02f, 0.5f to 0.98f) to 26,
    ),
    listOf(
        listOf(0.08f to 0.35f, 0.92f to 0.33f) to 18,
        listOf(0.5f to 0.05f, 0.48f to 0.45f, 0.35f to 0.75f, 0.08f to 0.95f) to 24,
        listOf(0.5f to 0.42f, 0.7f to 0.7f, 0.95f to 0.92f) to 20,
        listOf(0.72f to 0.08f, 0.78f to 0.16f) to 5,
    ),
    listOf(
        listOf(0.15f to 0.12f, 0.85f to 0.12f) to 14,
        listOf(0.2f to 0.5f, 0.8f to 0.5f) to 12,
        listOf(0.1f to 0.9f, 0.9f to 0.88f) to 18,
        listOf(0.5f to 0.12f, 0.5f to 0.9f) to 16,
        listOf(0.9f to 0.2f, 0.92f to 0.7f, 0.82f to 0.62f) to 10,
    ),
)

/** One stroke through the control points (a glyph box of `size` at `origin`), `n` samples. */
private fun brush(ctrl: Ctrl, n: Int, origin: Pair<Float, Float>, size: Float, t0: Int): List<PadPoint> {
    val pts = ctrl.map { (x, y) -> (origin.first + x * size) to (origin.second + y * size) }
    val lengths = pts.zipWithNext { a, b -> hypot(b.first - a.first, b.second - a.second) }
    val total = lengths.sum()
    return (0 until n).map { i ->
        var rest = total * i / (n - 1)
        var seg = 0
        while (seg < lengths.size - 1 && rest > lengths[seg]) {
            rest -= lengths[seg]
            seg++
        }
        val f = if (lengths[seg] > 0f) (rest / lengths[seg]).coerceAtMost(1f) else 0f
        val (a, b) = pts[seg] to pts[seg + 1]
        val tremor = sin(i * 1.7f + origin.first) * 0.3f
        val phase = PI.toFloat() * i / (n - 1)
        PadPoint(
            x = a.first + (b.first - a.first) * f + tremor,
            y = a.second + (b.second - a.second) * f - tremor,
            tMs = (t0 + i * 8 + i % 3).toUInt(),
            pressure = 0.35f + 0.45f * sin(phase),
        )
    }
}

/** A resident's handwritten signature: 13 strokes, 211 points. */
fun handwrittenSignature(): SignaturePad {
    val strokes = mutableListOf<List<PadPoint>>()
    var t = 0
    glyphs.forEachIndexed { g, glyph ->
        val origin = (30f + 105f * g) to 35f
        for ((ctrl, n) in glyph) {
            val stroke = brush(ctrl, n, origin, 90f, t)
            t = stroke.last().tMs.toInt() + 180
            strokes.add(stroke)
        }
        t += 400
    }
    return SignaturePad(surfaceWidth = 360f, surfaceHeight = 160f, strokes = strokes)
}

/** A tap on the pad and nothing else: what a blank signature looks like. */
fun blankSignature(): SignaturePad = SignaturePad(
    surfaceWidth = 360f,
    surfaceHeight = 160f,
    strokes = listOf(listOf(PadPoint(180f, 80f, 0u, 0.4f), PadPoint(180.5f, 80.2f, 9u, 0.4f))),
)
