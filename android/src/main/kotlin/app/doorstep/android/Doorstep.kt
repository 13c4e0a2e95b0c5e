// The coroutine face of the core. This file imports nothing from android.*: it compiles and
// runs on a plain JVM with kotlinx-coroutines-core and the generated bindings, which is how
// it is tested off the phone. Android-only code lives in the other files of this package.

package app.doorstep.android

import app.doorstep.core.CapturedSignature
import app.doorstep.core.ConflictInfo
import app.doorstep.core.DoorstepException
import app.doorstep.core.DoorstepStore
import app.doorstep.core.FollowUpResult
import app.doorstep.core.FollowUpTarget
import app.doorstep.core.HouseholdDetail
import app.doorstep.core.HouseholdFilter
import app.doorstep.core.HouseholdRow
import app.doorstep.core.Location
import app.doorstep.core.Pending
import app.doorstep.core.PhotoInfo
import app.doorstep.core.RefusedInfo
import app.doorstep.core.SignInput
import app.doorstep.core.SignaturePad
import app.doorstep.core.SyncCancel
import app.doorstep.core.SyncListener
import app.doorstep.core.SyncReport
import app.doorstep.core.VisitEnd
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.ensureActive
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.channelFlow
import kotlinx.coroutines.flow.distinctUntilChanged
import kotlinx.coroutines.sync.Mutex
import kotlinx.coroutines.sync.withLock
import kotlinx.coroutines.withContext

/**
 * The phone's Doorstep store, for coroutines: every call of [DoorstepStore] as a `suspend`
 * function that runs the blocking core call on [dispatcher] (by default [Dispatchers.IO]), so
 * it is safe to call from the main thread, plus [sync] and [syncNow] with progress and
 * cancellation.
 *
 * Thread rules: the core serialises its calls on one lock, so calls from several coroutines
 * are safe and simply queue; a sync holds that lock only while it reads or applies, so the
 * worker can keep recording while it runs. At most one sync of this instance runs at a time
 * (a second waits for the first). Open one [Doorstep] per store file per process.
 *
 * Errors: every call throws [DoorstepException] (a sealed class whose variants say what the app
 * can do; `code()` is a stable code to branch on and log, `detail()` a sentence for the worker
 * in Chinese, neither with personal data). The functions' docs name the variants each may
 * throw. Calls other than the syncs are not cancellable once they run: a cancelled coroutine
 * still waits for the call to end (they take milliseconds; a photo a few tenths of a second).
 *
 * Identifiers (households, visits, residents) are the core's UUID strings; times are
 * milliseconds since the Unix epoch (UTC) on the device clock.
 *
 * @property store the core object; its methods block, so prefer this class's functions.
 * @property dispatcher where the blocking calls run.
 */
class Doorstep(
    val store: DoorstepStore,
    private val dispatcher: CoroutineDispatcher = Dispatchers.IO,
) : AutoCloseable {

    private val syncLock = Mutex()

    /** This phone's device ID (UUID). */
    suspend fun deviceId(): String = call { store.deviceId() }

    /**
     * The account this phone is enrolled as; `null` before enrolment.
     *
     * @throws DoorstepException.Storage
     */
    suspend fun account(): String? = call { store.account() }

    /**
     * Enrols the phone from the office's QR code, as scanned (server address, one-time code
     * and the server key's pin). Needs the network.
     *
     * @throws DoorstepException.Invalid the text is not an enrolment code.
     * @throws DoorstepException.Unauthorized the code is wrong, used or expired.
     * @throws DoorstepException.ServerKeyMismatch the server is not the one the code names.
     * @throws DoorstepException.Offline
     * @throws DoorstepException.Server
     */
    suspend fun enrolScanned(scanned: String): Unit = call { store.enrolScanned(scanned) }

    /**
     * Enrols the phone with a code typed by hand, against [serverUrl], with the server key's
     * [pin] (`sha256/…`) when the office gave one. Errors: as [enrolScanned].
     */
    suspend fun enrolWithCode(serverUrl: String, code: String, pin: String? = null): Unit =
        call { store.enrolWithCode(serverUrl, code, pin) }

    /**
     * Households on this phone matching [filter], ordered by grid and door number. The default
     * filter matches all and returns the first 100.
     *
     * @throws DoorstepException.Invalid a search over 100 characters, an unknown status, or a
     *   limit over 500.
     */
    suspend fun households(
        filter: HouseholdFilter = HouseholdFilter(text = null, status = null, offset = 0u, limit = 0u),
    ): List<HouseholdRow> = call { store.households(filter) }

    /**
     * One household with its residents and visits (oldest first).
     *
     * @throws DoorstepException.NotFound not on this phone (moved to another grid: sync).
     * @throws DoorstepException.Invalid [id] is not a UUID.
     */
    suspend fun household(id: String): HouseholdDetail = call { store.household(id) }

    /**
     * Starts a visit at the door; returns the visit's ID.
     *
     * @param startedAtMs when, device clock, milliseconds since the Unix epoch (UTC).
     * @param location where the phone is, when known.
     * @throws DoorstepException.NotFound
     * @throws DoorstepException.Invalid a time or place out of range.
     */
    suspend fun startVisit(household: String, startedAtMs: Long, location: Location?): String =
        call { store.startVisit(household, startedAtMs, location) }

    /**
     * Takes in a photo for a visit: JPEG or PNG bytes as the camera gave them. The core turns
     * it upright, resizes and re-encodes it without EXIF, stores it and attaches it.
     *
     * @throws DoorstepException.PhotoRefused broken, too big or an unsupported format (HEIC):
     *   take another; the visit is unchanged.
     * @throws DoorstepException.NotFound
     * @throws DoorstepException.Invalid
     */
    suspend fun addPhoto(household: String, visit: String, photo: ByteArray): PhotoInfo =
        call { store.addPhoto(household, visit, photo) }

    /**
     * Checks and stores a signature drawn on the pad (coordinates in dp from the top left).
     * With [mark], a resident's mark (a cross, a thumbprint stroke) under the lighter check;
     * it must then be signed with a witness.
     *
     * @throws DoorstepException.SignatureRefused blank, too little ink, or outside the pad.
     */
    suspend fun captureSignature(pad: SignaturePad, mark: Boolean = false): CapturedSignature =
        call { store.captureSignature(pad, mark) }

    /**
     * Signs the notice or pledge in force for a visit, by a resident, with a captured
     * signature; returns the signed record's ID.
     *
     * @throws DoorstepException.Invalid the rule broken (a minor signing, a signature not
     *   captured on this phone, a mark without a witness), with the field.
     * @throws DoorstepException.NotFound
     */
    suspend fun sign(household: String, visit: String, input: SignInput): String =
        call { store.sign(household, visit, input) }

    /**
     * Finishes a visit. A completed visit needs a signed notice or pledge and a photo.
     *
     * @throws DoorstepException.VisitIncomplete with `missing`: `signed_paper`, `photo`.
     * @throws DoorstepException.Invalid a reason missing, a time before the start, a visit
     *   already finished.
     * @throws DoorstepException.NotFound
     */
    suspend fun finishVisit(household: String, visit: String, end: VisitEnd): Unit =
        call { store.finishVisit(household, visit, end) }

    /**
     * Voids a visit this phone recorded by mistake, with a reason (1 to 200 characters). The
     * visit stays, marked void.
     *
     * @throws DoorstepException.Invalid no reason, already voided, another phone's visit.
     * @throws DoorstepException.NotFound
     */
    suspend fun voidVisit(household: String, visit: String, reason: String): Unit =
        call { store.voidVisit(household, visit, reason) }

    /** What waits to be sent: changes and files (photos, signatures). */
    suspend fun pending(): Pending = call { store.pending() }

    /** Fields two phones wrote differently while offline; the office resolves them. */
    suspend fun conflicts(): List<ConflictInfo> = call { store.conflicts() }

    /** Changes the server refused, with its reasons; they stay on the phone. */
    suspend fun refused(): List<RefusedInfo> = call { store.refused() }

    /**
     * For a supervisor: finished visits on this phone that no follow-up call has checked yet,
     * with the number to call, at most [limit] (1 to 500).
     *
     * @throws DoorstepException.Invalid [limit] out of range.
     */
    suspend fun followUpTargets(limit: UInt = 100u): List<FollowUpTarget> =
        call { store.followUpTargets(limit) }

    /**
     * Records a supervisor's follow-up call about a visit; returns its ID. It is sent at the
     * next sync.
     *
     * @throws DoorstepException.NotEnrolled
     * @throws DoorstepException.NotFound
     * @throws DoorstepException.Invalid a visit not finished, answers given when nobody was
     *   reached, remarks over 500 characters.
     */
    suspend fun recordFollowUpCall(household: String, result: FollowUpResult): String =
        call { store.recordFollowUpCall(household, result) }

    /**
     * Syncs with the server: sends what waits, receives what changed, uploads photos and
     * signatures. Returns the final report.
     *
     * [onProgress] hears the report after each answer from the server. It runs on the sync's
     * background thread (not the caller's context), must return quickly, and must not block
     * on this store. If it throws, the sync is stopped and that exception is rethrown here.
     *
     * Cancelling the calling coroutine asks the core to stop before its next request (it does
     * not break the one in flight) and returns only once it has stopped, by throwing
     * [CancellationException]. Whether it ends normally, by an error or by cancellation, what
     * the server confirmed is kept and the rest waits for the next sync.
     *
     * @throws DoorstepException.NotEnrolled
     * @throws DoorstepException.Unauthorized the phone was revoked or its token refused.
     * @throws DoorstepException.ServerKeyMismatch do not retry: call the office.
     * @throws DoorstepException.Offline
     * @throws DoorstepException.Server
     */
    suspend fun syncNow(onProgress: (SyncReport) -> Unit = {}): SyncReport =
        syncLock.withLock { runSync(onProgress) }

    /**
     * [syncNow] as a cold [Flow]: each collection runs one sync and emits where it stands after
     * each answer from the server, then the final report, and completes. It is conflated: a
     * slow collector sees the latest report, never a stale one, and always the last.
     *
     * Cancelling the collector stops the sync as [syncNow] describes. The flow throws what
     * [syncNow] throws.
     */
    fun sync(): Flow<SyncReport> =
        channelFlow {
            // trySend never fails on the conflated channel; it is safe from the sync's thread.
            val done = syncNow { report -> trySend(report) }
            send(done)
        }
            .buffer(Channel.CONFLATED)
            .distinctUntilChanged()

    /**
     * Releases the core object. Calls already running finish first; later calls throw
     * [IllegalStateException]. The store file itself stays as it is.
     */
    override fun close() {
        store.close()
    }

    private suspend fun runSync(onProgress: (SyncReport) -> Unit): SyncReport {
        val cancel = SyncCancel()
        val relay = ProgressRelay(onProgress, cancel)
        try {
            // coroutineScope waits for the blocking call even when cancelled, so this returns
            // (or throws) only after the core has let go of the sync.
            return coroutineScope {
                val work = async(dispatcher) {
                    val done = try {
                        store.syncNow(relay, cancel)
                    } catch (e: DoorstepException.Cancelled) {
                        // Stopped because this coroutine was cancelled: say so the coroutine
                        // way. Stopped because onProgress threw: rethrow what it threw.
                        ensureActive()
                        throw relay.failure ?: e
                    }
                    // onProgress may have thrown at the last answer, after which the sync
                    // ended without looking at the cancel flag again.
                    relay.failure?.let { throw it }
                    done
                }
                try {
                    work.await()
                } catch (e: CancellationException) {
                    cancel.cancel()
                    throw e
                }
            }
        } finally {
            cancel.close()
        }
    }

    private suspend fun <T> call(block: () -> T): T = withContext(dispatcher) { block() }

    /**
     * Passes the core's progress to the caller's lambda; a lambda that throws stops the sync
     * (an exception must not cross back into Rust) and is remembered to be rethrown.
     */
    private class ProgressRelay(
        private val onProgress: (SyncReport) -> Unit,
        private val cancel: SyncCancel,
    ) : SyncListener {
        @Volatile
        var failure: Throwable? = null
            private set

        override fun onProgress(report: SyncReport) {
            if (failure != null) return
            try {
                onProgress.invoke(report)
            } catch (t: Throwable) {
                failure = t
                cancel.cancel()
            }
        }
    }

    companion object {
        /**
         * Opens (creating when absent) the store file at [path], encrypted under [key]: exactly
         * 32 bytes that the platform keystore keeps for this phone (see KeystoreKeyProvider on
         * Android). The caller may wipe [key] once this returns.
         *
         * @throws DoorstepException.WrongKey the file does not open with this key: do not
         *   delete it; the office must be told.
         * @throws DoorstepException.Invalid a key that is not 32 bytes, or an empty path.
         * @throws DoorstepException.Storage the file cannot be read or written, or a newer app
         *   wrote it.
         */
        suspend fun open(
            path: String,
            key: ByteArray,
            dispatcher: CoroutineDispatcher = Dispatchers.IO,
        ): Doorstep = withContext(dispatcher) { Doorstep(DoorstepStore.open(path, key), dispatcher) }
    }
}
