// The phone apps' view of the core, on the JVM: the generated Kotlin bindings
// (app.doorstep.core) over the host build of libdoorstep_core, against the real server
// on loopback. A grid worker's phone enrols with a one-time code, pulls its grid, records
// a whole visit offline (photo, signature, signed notice and pledge) and syncs it; a
// supervisor's phone enrols from the QR payload, sees the visit arrive and records a
// follow-up call; the worker's phone receives it through the Android module's coroutine
// wrapper (android/src/main/kotlin/app/doorstep/android/Doorstep.kt, plain JVM Kotlin).
// Error cases on the way: wrong key, broken photo, reused code, no server, not enrolled,
// an incomplete visit, cancelled syncs.
//
// Run by tests/tests/kotlin/mod.rs, which passes (environment):
//   DOORSTEP_SERVER_URL        the server, http://127.0.0.1:PORT
//   DOORSTEP_WORKER_CODE       a one-time enrolment code of the grid worker `kt-worker`
//   DOORSTEP_SUPERVISOR_QR     the QR payload of an enrolment code of `kt-supervisor`
//   DOORSTEP_GRID_HOUSEHOLDS   households in their grid, as the roster has them
//   DOORSTEP_PHOTO             a phone photo (JPEG) from ../shared/fixtures
//   DOORSTEP_WORK_DIR          an empty folder for the store files
// and checks on the server what the lines starting with `@` report.

import app.doorstep.android.Doorstep
import app.doorstep.core.DoorstepException
import app.doorstep.core.DoorstepStore
import app.doorstep.core.FollowUpResult
import app.doorstep.core.HouseholdDetail
import app.doorstep.core.HouseholdFilter
import app.doorstep.core.HouseholdRow
import app.doorstep.core.Location
import app.doorstep.core.Outcome
import app.doorstep.core.PaperKind
import app.doorstep.core.Pending
import app.doorstep.core.SignInput
import app.doorstep.core.SyncCancel
import app.doorstep.core.SyncListener
import app.doorstep.core.SyncReport
import app.doorstep.core.VisitEnd
import app.doorstep.core.VisitInfo
import java.io.File
import java.net.ServerSocket
import java.security.SecureRandom
import java.util.Collections
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking

private fun env(name: String): String =
    System.getenv(name) ?: throw IllegalStateException("environment variable $name is not set")

private fun randomKey(): ByteArray = ByteArray(32).also { SecureRandom().nextBytes(it) }

private fun filter(text: String? = null, status: String? = null, offset: Int = 0, limit: Int = 0) =
    HouseholdFilter(text = text, status = status, offset = offset.toUInt(), limit = limit.toUInt())

/**
 * Records every progress report of a sync, and can cancel it at the first one. With
 * `store`, it also reads the store from inside the callback, as an app updating its
 * screen would (the sync must not hold the store's lock while it calls back).
 */
private class Progress(
    private val cancelAtFirst: SyncCancel? = null,
    private val store: DoorstepStore? = null,
) : SyncListener {
    val reports: MutableList<SyncReport> = Collections.synchronizedList(mutableListOf())
    val pendingSeen: MutableList<Pending> = Collections.synchronizedList(mutableListOf())

    override fun onProgress(report: SyncReport) {
        reports.add(report)
        cancelAtFirst?.cancel()
        store?.let {
            pendingSeen.add(it.pending())
            it.households(filter(limit = 1))
        }
    }
}

/** Every row, page by page. */
private fun allRows(store: DoorstepStore, page: Int, status: String? = null): List<HouseholdRow> {
    val rows = mutableListOf<HouseholdRow>()
    while (true) {
        val got = store.households(filter(status = status, offset = rows.size, limit = page))
        expect(got.size <= page) { "a page of $page returned ${got.size} rows" }
        rows.addAll(got)
        if (got.size < page) return rows
    }
}

/** A sync's reports only grow, and the last one is the sync's answer. */
private fun expectConsistent(progress: Progress, report: SyncReport) {
    val reports = progress.reports.toList()
    expect(reports.isNotEmpty()) { "the listener was never called" }
    expectEq(reports.last(), report, "last progress report vs. the sync's report")
    expectEq(reports.size.toULong(), report.roundTrips, "one report per answer (round trips)")
    reports.zipWithNext { a, b ->
        expect(
            b.changesSent >= a.changesSent && b.householdsReceived >= a.householdsReceived &&
                b.filesUploaded >= a.filesUploaded && b.roundTrips == a.roundTrips + 1u,
        ) { "progress went backwards: $a then $b" }
    }
    expect(report.filesUploaded <= report.filesTotal) { "uploaded more files than the total: $report" }
}

private fun visitOf(detail: HouseholdDetail, visit: String): VisitInfo =
    detail.visits.firstOrNull { it.id == visit } ?: throw CheckFailed("visit $visit is not in household ${detail.row.id}")

private fun syncFully(store: DoorstepStore): SyncReport {
    val progress = Progress()
    val report = store.syncNow(progress, SyncCancel())
    expectConsistent(progress, report)
    return report
}

fun main() {
    val serverUrl = env("DOORSTEP_SERVER_URL")
    val workerCode = env("DOORSTEP_WORKER_CODE")
    val supervisorQr = env("DOORSTEP_SUPERVISOR_QR")
    val gridHouseholds = env("DOORSTEP_GRID_HOUSEHOLDS").toInt()
    val photo = File(env("DOORSTEP_PHOTO")).readBytes()
    val dir = File(env("DOORSTEP_WORK_DIR"))
    val workerPath = File(dir, "worker.db").path
    val workerKey = randomKey()
    val now = System.currentTimeMillis()
    val here = Location(lat = 30.5928, lon = 114.3055, accuracyM = 12.0)

    // --- Opening and enrolling ------------------------------------------------------
    var worker = Checks.must("open an encrypted store with a random 32-byte key") {
        val s = DoorstepStore.open(workerPath, workerKey)
        expect(Regex("[0-9a-f-]{36}").matches(s.deviceId())) { "device ID ${s.deviceId()}" }
        expectEq(s.account(), null, "account before enrolment")
        s
    }
    Checks.check("a key that is not 32 bytes is refused as Invalid(key)") {
        val e = expectThrows<DoorstepException.Invalid> { DoorstepStore.open(File(dir, "short.db").path, ByteArray(31)) }
        expectError(e, "invalid")
        expectEq(e.field, "key", "field")
    }
    Checks.check("a store never enrolled cannot sync (NotEnrolled) and has no paper text yet") {
        val e = expectThrows<DoorstepException.NotEnrolled> { worker.syncNow(Progress(), SyncCancel()) }
        expectError(e, "not_enrolled")
        val t = expectThrows<DoorstepException.Invalid> { worker.paperText(PaperKind.PLEDGE) }
        expectError(t, "invalid")
        expectEq(t.field, "template", "field")
    }
    Checks.check("enrolling where no server listens: Offline, and the code is not spent") {
        val closedPort = ServerSocket(0).use { it.localPort }
        val e = expectThrows<DoorstepException.Offline> {
            worker.enrolWithCode("http://127.0.0.1:$closedPort", workerCode, null)
        }
        expectError(e, "offline")
        expectEq(worker.account(), null, "account after a failed enrolment")
    }
    Checks.must("enrol with the one-time code (enrolWithCode)") {
        worker.enrolWithCode(serverUrl, workerCode, null)
        expectEq(worker.account(), "kt-worker", "account")
    }
    Checks.check("the code works once: another phone using it gets Unauthorized") {
        DoorstepStore.open(File(dir, "thief.db").path, randomKey()).use { other ->
            val e = expectThrows<DoorstepException.Unauthorized> { other.enrolWithCode(serverUrl, workerCode, null) }
            expectError(e, "unauthorized")
            expectEq(other.account(), null, "account of the refused phone")
        }
    }

    // --- First sync and the household list ---------------------------------------
    Checks.must("first sync pulls the grid's households, reporting progress") {
        val progress = Progress()
        val report = worker.syncNow(progress, SyncCancel())
        expectConsistent(progress, report)
        println("     first sync: $report, ${progress.reports.size} progress reports")
        expect(report.householdsReceived >= gridHouseholds.toULong()) {
            "received ${report.householdsReceived} household updates, the grid has $gridHouseholds"
        }
        expectEq(report.changesRefused, 0uL, "changes refused")
        expectEq(worker.pending(), Pending(changes = 0uL, files = 0uL), "pending after the first sync")
    }
    val all = Checks.must("paging by 20 lists every household of the grid once, as one page of 500 does") {
        val paged = allRows(worker, 20)
        expectEq(paged.size, gridHouseholds, "households listed")
        expectEq(paged.map { it.id }.toSet().size, paged.size, "distinct households")
        expectEq(worker.households(filter(limit = 500)), paged, "one page of 500")
        expectEq(worker.households(filter()).size, minOf(100, gridHouseholds), "limit 0 means 100")
        expect(paged.all { it.status == null && it.visits == 0u }) { "a household is already visited" }
        expectEq(paged.map { it.grid }.toSet().size, 1, "grids on the phone")
        paged
    }
    Checks.check("status unvisited lists them all before any visit; a wrong status or limit is Invalid") {
        expectEq(allRows(worker, 100, status = "unvisited").size, gridHouseholds, "unvisited")
        expectEq(worker.households(filter(status = "completed")).size, 0, "completed")
        val e = expectThrows<DoorstepException.Invalid> { worker.households(filter(status = "finished")) }
        expectError(e, "invalid")
        expectEq(e.field, "status", "field")
        val l = expectThrows<DoorstepException.Invalid> { worker.households(filter(limit = 501)) }
        expectEq(l.field, "limit", "field")
    }

    // A household with a phone number and an adult who may sign, and (when the grid has
    // one) a minor in it too.
    val details = all.map { worker.household(it.id) }
    val target = Checks.must("a household with a phone number and an adult resident to sign") {
        details.firstOrNull { d ->
            d.phone.length >= 7 && d.residents.any { it.maySign } && d.residents.any { !it.maySign }
        } ?: details.first { d -> d.phone.length >= 7 && d.residents.any { it.maySign } }
    }
    val hid = target.row.id
    val adult = target.residents.first { it.maySign }
    val minor = target.residents.firstOrNull { !it.maySign }
    Checks.check("search by part of a resident's name") {
        val part = adult.name.trim().takeLast(2)
        val rows = worker.households(filter(text = part))
        expect(rows.any { it.id == hid }) { "searching '$part' does not list the household" }
        for (r in rows) {
            val d = details.first { it.row.id == r.id }
            expect(d.residents.any { part in it.name } || part in d.row.doorNumber) { "${r.id} does not match '$part'" }
        }
        expect(rows.size < all.size) { "'$part' matches every household" }
    }
    Checks.check("search by the last digits of the phone, also spoken with a dash") {
        val digits = target.phone.filter { it.isDigit() }
        val last4 = digits.takeLast(4)
        expect(worker.households(filter(text = last4)).any { it.id == hid }) { "last 4 digits do not find it" }
        val spoken = "${last4.take(2)}-${last4.drop(2)}"
        expect(worker.households(filter(text = spoken)).any { it.id == hid }) { "'$spoken' does not find it" }
        expect(worker.households(filter(text = "00000000000")).none { it.id == hid }) { "a wrong number finds it" }
    }
    Checks.check("search by door number") {
        val rows = worker.households(filter(text = target.row.doorNumber))
        expect(rows.any { it.id == hid }) { "door number ${target.row.doorNumber} does not find it" }
    }

    // --- A whole visit, offline (nothing here talks to the server) -------------------
    val visit = Checks.must("start a visit at the door") {
        val v = worker.startVisit(hid, now, here)
        val info = visitOf(worker.household(hid), v)
        expect(info.outcome == null && info.mine && info.visitor == "kt-worker" && info.photos == 0u) { "$info" }
        expectEq(worker.household(hid).row.status, "in_progress", "status")
        v
    }
    Checks.check("finishing as completed before the photo and the signing: VisitIncomplete") {
        val e = expectThrows<DoorstepException.VisitIncomplete> {
            worker.finishVisit(hid, visit, VisitEnd(Outcome.COMPLETED, "", now + 60_000, emptyList(), ""))
        }
        expectError(e, "visit_incomplete")
        expectEq(e.missing.toSet(), setOf("signed_paper", "photo"), "missing")
        expectEq(visitOf(worker.household(hid), visit).outcome, null, "outcome after the refusal")
    }
    Checks.check("a broken photo (truncated JPEG) is refused and the visit is unchanged") {
        val before = worker.household(hid)
        val pendingBefore = worker.pending()
        val e = expectThrows<DoorstepException.PhotoRefused> { worker.addPhoto(hid, visit, photo.copyOf(photo.size / 40)) }
        expectError(e, "photo_refused")
        expectEq(worker.household(hid), before, "household after the refused photo")
        expectEq(worker.pending(), pendingBefore, "pending after the refused photo")
    }
    val photoSha = Checks.must("a phone photo is taken in: upright, at most 1600 px, re-encoded") {
        val p = worker.addPhoto(hid, visit, photo)
        expect(Regex("[0-9a-f]{64}").matches(p.sha256)) { "sha256 ${p.sha256}" }
        expect(maxOf(p.width, p.height) <= 1600u && p.width > p.height) { "${p.width}x${p.height}" }
        expect(p.sizeBytes > 0uL && p.sizeBytes < photo.size.toULong()) { "stored ${p.sizeBytes} B of ${photo.size}" }
        expectEq(visitOf(worker.household(hid), visit).photos, 1u, "photos on the visit")
        p.sha256
    }
    Checks.check("a blank signature pad is refused: SignatureRefused") {
        val e = expectThrows<DoorstepException.SignatureRefused> { worker.captureSignature(blankSignature(), false) }
        expectError(e, "signature_refused")
    }
    val signature = Checks.must("a handwritten signature is captured") {
        val s = worker.captureSignature(handwrittenSignature(), false)
        expect(Regex("[0-9a-f]{64}").matches(s.pngSha256) && s.pngBytes > 500uL) { "$s" }
        s
    }
    Checks.check("a minor may not sign: Invalid(signer)") {
        if (minor == null) {
            println("     (no resident under 18 in this household; checked the UUID rule instead)")
            val e = expectThrows<DoorstepException.Invalid> {
                worker.sign(hid, visit, SignInput(PaperKind.NOTICE, "not-a-resident", signature.pngSha256, null, null))
            }
            expectEq(e.field, "signer", "field")
        } else {
            val e = expectThrows<DoorstepException.Invalid> {
                worker.sign(hid, visit, SignInput(PaperKind.NOTICE, minor.id, signature.pngSha256, null, null))
            }
            expectError(e, "invalid")
            expectEq(e.field, "signer", "field")
        }
    }
    Checks.check("the notice and pledge in force are there to read out before signing") {
        for (kind in listOf(PaperKind.NOTICE, PaperKind.PLEDGE)) {
            val p = worker.paperText(kind)
            expect(hasChinese(p.title) && hasChinese(p.body) && p.body.length > 50) { "$kind: $p" }
            expect(p.version >= 1u && Regex("\\d{4}-\\d{2}-\\d{2}").matches(p.effectiveFrom)) { "$kind: $p" }
        }
        expect(worker.paperText(PaperKind.NOTICE).body != worker.paperText(PaperKind.PLEDGE).body) { "one text for both" }
    }
    Checks.must("the adult signs the notice and the pledge") {
        val notice = worker.sign(hid, visit, SignInput(PaperKind.NOTICE, adult.id, signature.pngSha256, null, null))
        val pledge = worker.sign(hid, visit, SignInput(PaperKind.PLEDGE, adult.id, signature.pngSha256, null, here))
        expect(notice != pledge) { "one record ID for two papers" }
        expectEq(visitOf(worker.household(hid), visit).signed.sorted(), listOf("notice", "pledge"), "signed")
    }
    Checks.must("the visit finishes as completed") {
        worker.finishVisit(hid, visit, VisitEnd(Outcome.COMPLETED, "", now + 15 * 60_000, emptyList(), "讲解了冒充客服、刷单返利两类诈骗"))
        val d = worker.household(hid)
        val v = visitOf(d, visit)
        expect(v.outcome == "completed" && v.finishedAtMs == now + 15 * 60_000 && v.photos == 1u) { "$v" }
        expectEq(d.row.status, "completed", "status")
        expectEq(d.row.visits, 1u, "visits")
        expectEq(worker.households(filter(status = "completed")).map { it.id }, listOf(hid), "completed households")
        expectEq(allRows(worker, 100, status = "unvisited").size, gridHouseholds - 1, "unvisited")
    }
    // A nobody-home visit at the last household in the list's order (the grid has more
    // than 100), recorded and then voided.
    val other = all.last { it.id != hid }.id
    val otherVisit = Checks.must("a finished visit cannot be finished again; a nobody-home visit needs a reason") {
        val e = expectThrows<DoorstepException.Invalid> {
            worker.finishVisit(hid, visit, VisitEnd(Outcome.COMPLETED, "", now + 16 * 60_000, emptyList(), ""))
        }
        expectError(e, "invalid")
        val v = worker.startVisit(other, now, null)
        val r = expectThrows<DoorstepException.Invalid> {
            worker.finishVisit(other, v, VisitEnd(Outcome.NOBODY_HOME, "", now + 60_000, emptyList(), ""))
        }
        expectEq(r.field, "outcome_reason", "field")
        worker.finishVisit(other, v, VisitEnd(Outcome.NOBODY_HOME, "敲门无人应答", now + 60_000, emptyList(), ""))
        v
    }
    Checks.check("household(id) shows the list's row, also past the list's first 100 rows") {
        val rows = allRows(worker, 500)
        expect(rows.indexOfFirst { it.id == other } >= 100) { "the household is not past row 100" }
        val listed = rows.first { it.id == other }
        expectEq(listed.status, "nobody_home", "status in the list")
        expectEq(worker.household(other).row, listed, "household(\"$other\").row")
        expectEq(worker.household(hid).row, rows.first { it.id == hid }, "household(\"$hid\").row")
    }
    Checks.check("a visit recorded by mistake is voided with a reason") {
        worker.voidVisit(other, otherVisit, "误点了开始走访")
        val info = visitOf(worker.household(other), otherVisit)
        expect(info.voided && info.outcome == "nobody_home") { "$info" }
        val e = expectThrows<DoorstepException.Invalid> { worker.voidVisit(other, otherVisit, "再次作废") }
        expectError(e, "invalid")
    }
    val pendingBefore = Checks.must("pending() shows the changes and files waiting") {
        val p = worker.pending()
        println("     pending: $p")
        expect(p.changes >= 6uL) { "changes: $p" }
        // The photo and its thumbnail, the signature's strokes and image.
        expect(p.files >= 4uL) { "files: $p" }
        p
    }

    // --- Cancelling, then syncing the visit -----------------------------------------
    Checks.check("a sync cancelled before it starts: Cancelled, nothing sent") {
        val cancel = SyncCancel()
        cancel.cancel()
        expect(cancel.isCancelled()) { "isCancelled() after cancel()" }
        val progress = Progress()
        val e = expectThrows<DoorstepException.Cancelled> { worker.syncNow(progress, cancel) }
        expectError(e, "cancelled")
        expectEq(progress.reports.size, 0, "progress reports")
        expectEq(worker.pending(), pendingBefore, "pending")
    }
    Checks.check("a sync cancelled at its first progress report stops there: Cancelled") {
        val cancel = SyncCancel()
        val progress = Progress(cancelAtFirst = cancel)
        val e = expectThrows<DoorstepException.Cancelled> { worker.syncNow(progress, cancel) }
        expectError(e, "cancelled")
        expectEq(progress.reports.size, 1, "progress reports before stopping")
        val p = worker.pending()
        println("     pending after the cancelled sync: $p")
        expect(p != Pending(0uL, 0uL)) { "everything was sent although the sync stopped after one answer" }
    }
    Checks.must("a later sync sends the rest and uploads the files; the listener may read the store") {
        val progress = Progress(store = worker)
        val report = worker.syncNow(progress, SyncCancel())
        expectConsistent(progress, report)
        println("     sync: $report; pending seen from the listener: ${progress.pendingSeen}")
        expectEq(progress.pendingSeen.size, progress.reports.size, "pending() calls from the listener")
        expectEq(progress.pendingSeen.last(), Pending(0uL, 0uL), "pending() at the last report")
        expect(report.filesUploaded >= 1uL && report.filesUploaded == report.filesTotal) { "files: $report" }
        expectEq(report.changesRefused, 0uL, "changes refused")
        expectEq(worker.pending(), Pending(0uL, 0uL), "pending after the sync")
        expectEq(worker.refused(), emptyList(), "refused changes")
        expectEq(worker.conflicts(), emptyList(), "conflicts")
        println("@visit $hid $visit")
        println("@photo $photoSha")
    }

    // --- The store at rest: the key is needed ----------------------------------------
    worker.close()
    Checks.check("reopening with a wrong key: WrongKey") {
        val wrong = workerKey.copyOf().also { it[0] = (it[0].toInt() xor 1).toByte() }
        val e = expectThrows<DoorstepException.WrongKey> { DoorstepStore.open(workerPath, wrong) }
        expectError(e, "wrong_key")
    }
    worker = Checks.must("the right key reopens it with everything in it") {
        val s = DoorstepStore.open(workerPath, workerKey)
        expectEq(s.account(), "kt-worker", "account")
        val v = visitOf(s.household(hid), visit)
        expect(v.outcome == "completed" && v.photos == 1u && v.signed.size == 2) { "$v" }
        expectEq(s.pending(), Pending(0uL, 0uL), "pending")
        s
    }

    // --- The supervisor's phone: what arrived, and a follow-up call ---------------------
    val supervisor = Checks.must("a supervisor's phone enrols from the QR payload and syncs the grid") {
        val s = DoorstepStore.open(File(dir, "supervisor.db").path, randomKey())
        s.enrolScanned(supervisorQr)
        expectEq(s.account(), "kt-supervisor", "account")
        val report = syncFully(s)
        expect(report.householdsReceived >= gridHouseholds.toULong()) { "$report" }
        expectEq(allRows(s, 500).size, gridHouseholds, "households")
        s
    }
    Checks.check("the supervisor sees the worker's visit: completed, one photo, notice and pledge signed") {
        val d = supervisor.household(hid)
        val v = visitOf(d, visit)
        expect(v.outcome == "completed" && v.visitor == "kt-worker" && !v.mine && !v.voided) { "$v" }
        expectEq(v.photos, 1u, "photos")
        expectEq(v.signed.sorted(), listOf("notice", "pledge"), "signed")
        expectEq(d.row.status, "completed", "status")
        expectEq(supervisor.households(filter(status = "completed")).map { it.id }, listOf(hid), "completed")
    }
    Checks.check("follow-up targets list the visit with the number to call; a limit of 0 is Invalid") {
        val targets = supervisor.followUpTargets(50u)
        val t = targets.firstOrNull { it.visit == visit } ?: throw CheckFailed("the visit is not a target: $targets")
        expect(t.household == hid && t.outcome == "completed" && t.finishedAtMs == now + 15 * 60_000) { "$t" }
        expectEq(t.phone.filter { it.isDigit() }.takeLast(4), target.phone.filter { it.isDigit() }.takeLast(4), "phone")
        expect(targets.none { it.outcome == "nobody_home" }) { "a voided visit is a target: $targets" }
        expectThrows<DoorstepException.Invalid> { supervisor.followUpTargets(0u) }
    }
    Checks.check("the supervisor draws a sample on the phone: the same seed draws the same households; a bad size is Invalid") {
        val row = supervisor.household(hid).row
        val a = supervisor.drawFollowUpSample(row.village, null, 100u, null, "42")
        val b = supervisor.drawFollowUpSample(row.village, row.grid, null, 50u, "42")
        expect(a.seed == "42" && a.candidates >= 1u && a.drawn.any { it.visit == visit }) { "$a" }
        expectEq(b.drawn.map { it.household }.sorted(), a.drawn.map { it.household }.sorted(), "same households")
        val fresh = supervisor.drawFollowUpSample(row.village, null, null, 1u, null)
        expect(fresh.drawn.size == 1 && fresh.seed.isNotEmpty()) { "$fresh" }
        val bad = expectThrows<DoorstepException.Invalid> {
            supervisor.drawFollowUpSample(row.village, null, 10u, 10u, null)
        }
        expectEq(bad.field, "size", "field")
        expectError(bad, "invalid")
        expect(supervisor.rectifications().isEmpty()) { "no rectification yet" }
        expect(supervisor.directives().isEmpty()) { "no directive on a supervisor's phone" }
        val noSuch = expectThrows<DoorstepException.Invalid> { supervisor.acknowledgeDirective(hid, "东坡村") }
        expectEq(noSuch.field, "directive", "field")
    }
    Checks.must("the supervisor records a follow-up call and syncs it") {
        val bad = expectThrows<DoorstepException.Invalid> {
            supervisor.recordFollowUpCall(hid, FollowUpResult(visit, now + 3_600_000, false, true, null, ""))
        }
        expectEq(bad.field, "reached", "field")
        val id = supervisor.recordFollowUpCall(
            hid,
            FollowUpResult(visit, now + 3_600_000, true, true, true, "户主确认已走访，知晓不转账、不透露验证码"),
        )
        expect(id.isNotEmpty()) { "call ID" }
        expectEq(supervisor.pending().changes, 1uL, "pending changes")
        val report = syncFully(supervisor)
        expect(report.changesSent >= 1uL && report.changesRefused == 0uL) { "$report" }
        expectEq(supervisor.pending(), Pending(0uL, 0uL), "pending")
        expectEq(visitOf(supervisor.household(hid), visit).followUpCalls, 1u, "follow-up calls")
        expect(supervisor.followUpTargets(50u).none { it.visit == visit }) { "the visit is still a target" }
        println("@follow_up $id")
    }

    // --- The Android module's coroutine wrapper (android/…/Doorstep.kt), on the JVM ------
    Checks.check("through the coroutine wrapper, the worker's next sync brings the follow-up call") {
        runBlocking {
            val phone = Doorstep(worker)
            expectEq(phone.account(), "kt-worker", "account()")
            val seen = Collections.synchronizedList(mutableListOf<SyncReport>())
            val report = phone.syncNow { seen.add(it) }
            expect(seen.isNotEmpty() && seen.last() == report) { "progress $seen, report $report" }
            expect(report.householdsReceived >= 1uL) { "$report" }
            expectEq(visitOf(phone.household(hid), visit).followUpCalls, 1u, "follow-up calls")
            expectEq(phone.pending(), Pending(0uL, 0uL), "pending()")
            // The Flow form: a sync with nothing new, its last report the final one.
            val flowed = phone.sync().toList()
            expect(flowed.isNotEmpty() && flowed.last().changesSent == 0uL) { "$flowed" }
        }
    }
    Checks.check("through the coroutine wrapper, a progress callback that throws stops the sync with its exception") {
        runBlocking {
            val phone = Doorstep(worker)
            class Stop : RuntimeException("stop")
            var thrown: Throwable? = null
            try {
                phone.syncNow { throw Stop() }
            } catch (e: Stop) {
                thrown = e
            }
            expect(thrown is Stop) { "syncNow did not rethrow the callback's exception" }
            expectEq(phone.households(filter(limit = 500)).size, gridHouseholds, "households afterwards")
        }
    }
    supervisor.close()
    worker.close()
    Checks.finish()
}
