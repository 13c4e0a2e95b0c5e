// The async face of the core for Swift concurrency. Logic stays in Rust: this file only moves
// the core's blocking calls off the caller's thread and bridges sync progress and cancellation.

// The generated types (HouseholdRow, SignInput, DoorstepError, ...) come with `import Doorstep`.
@_exported import DoorstepCore
import Foundation

/// The phone's Doorstep store, for Swift concurrency: every call of ``DoorstepStore`` as an
/// `async` function, plus ``sync()`` and ``syncNow(onProgress:)`` with progress and
/// cancellation.
///
/// **Threads.** The core's calls block (SQLite, photo decoding, the network), so they run on a
/// Dispatch queue, never on the caller's thread nor on Swift's cooperative thread pool; call
/// them from anywhere, the main actor included. The core serialises its calls on one lock, so
/// concurrent calls are safe and simply queue; a sync holds that lock only while it reads or
/// applies, so the worker can keep recording while it runs. Syncs of one `Doorstep` run one
/// at a time (a second waits for the first). Keep one `Doorstep` per store file per process.
///
/// **Errors.** Every throwing call throws ``DoorstepError``: `code()` is a stable code to
/// branch on and log, `detail()` a sentence for the worker in Chinese; neither carries personal
/// data. Each function's documentation names the cases it may throw. Calls other than the syncs
/// are not cancellable once they run (they take milliseconds; a photo a few tenths of a second).
///
/// **Values.** Identifiers (households, visits, residents) are the core's UUID strings; times
/// are milliseconds since the Unix epoch (UTC) on the device clock.
public final class Doorstep: Sendable {
    /// The queue store calls run on by default: concurrent, user-initiated.
    public static let defaultQueue = DispatchQueue(
        label: "app.doorstep.store", qos: .userInitiated, attributes: .concurrent)

    /// The core object. Its methods block: prefer this class's functions.
    public let store: DoorstepStore

    private let queue: DispatchQueue

    /// Serial: one sync at a time. Utility: long work with visible progress.
    private let syncQueue = DispatchQueue(label: "app.doorstep.sync", qos: .utility)

    /// Wraps an open store; calls other than the syncs run on `queue`.
    public init(store: DoorstepStore, queue: DispatchQueue = Doorstep.defaultQueue) {
        self.store = store
        self.queue = queue
    }

    /// Opens (creating when absent) the store file at `path`, encrypted under `key`: exactly
    /// 32 bytes that the Keychain keeps for this phone (see ``KeychainKeyProvider``). The
    /// caller may wipe `key` once this returns.
    ///
    /// - Throws: ``DoorstepError`` `WrongKey` (the file does not open with this key: do not
    ///   delete it, the office must be told); `Invalid` (a key that is not 32 bytes, an empty
    ///   path); `Storage` (the file cannot be read or written, or a newer app wrote it).
    public static func open(
        path: String, key: Data, queue: DispatchQueue = Doorstep.defaultQueue
    ) async throws -> Doorstep {
        try await perform(on: queue) {
            let store = try DoorstepStore.open(path: path, key: key)
            return Doorstep(store: store, queue: queue)
        }
    }

    /// This phone's device ID (UUID).
    public func deviceId() async -> String {
        await withCheckedContinuation { continuation in
            self.queue.async { continuation.resume(returning: self.store.deviceId()) }
        }
    }

    /// The account this phone is enrolled as; `nil` before enrolment.
    ///
    /// - Throws: ``DoorstepError`` `Storage`.
    public func account() async throws -> String? {
        try await run { try self.store.account() }
    }

    /// Enrols the phone from the office's QR code, as scanned (server address, one-time code
    /// and the server key's pin). Needs the network.
    ///
    /// - Throws: ``DoorstepError`` `Invalid` (not an enrolment code); `Unauthorized` (the code
    ///   is wrong, used or expired); `ServerKeyMismatch`; `Offline`; `Server`.
    public func enrolScanned(scanned: String) async throws {
        try await run { try self.store.enrolScanned(scanned: scanned) }
    }

    /// Enrols the phone with a code typed by hand, against `serverUrl`, with the server key's
    /// `pin` (`sha256/…`) when the office gave one.
    ///
    /// - Throws: as ``enrolScanned(scanned:)``.
    public func enrolWithCode(serverUrl: String, code: String, pin: String? = nil) async throws {
        try await run { try self.store.enrolWithCode(serverUrl: serverUrl, code: code, pin: pin) }
    }

    /// Households on this phone matching `filter`, ordered by grid and door number. The default
    /// filter matches all and returns the first 100.
    ///
    /// - Throws: ``DoorstepError`` `Invalid` (a search over 100 characters, an unknown status, a
    ///   limit over 500).
    public func households(
        filter: HouseholdFilter = HouseholdFilter(text: nil, status: nil, offset: 0, limit: 0)
    ) async throws -> [HouseholdRow] {
        try await run { try self.store.households(filter: filter) }
    }

    /// One household with its residents and visits (oldest first).
    ///
    /// - Throws: ``DoorstepError`` `NotFound` (not on this phone: it may have moved to another
    ///   grid; sync); `Invalid` (`id` is not a UUID).
    public func household(id: String) async throws -> HouseholdDetail {
        try await run { try self.store.household(id: id) }
    }

    /// Starts a visit at the door; returns the visit's ID.
    ///
    /// - Parameters:
    ///   - startedAtMs: when, device clock, milliseconds since the Unix epoch (UTC).
    ///   - location: where the phone is, when known.
    /// - Throws: ``DoorstepError`` `NotFound`; `Invalid` (a time or place out of range).
    public func startVisit(household: String, startedAtMs: Int64, location: Location?) async throws -> String {
        try await run {
            try self.store.startVisit(household: household, startedAtMs: startedAtMs, location: location)
        }
    }

    /// Takes in a photo for a visit: JPEG or PNG bytes as the camera gave them (set the camera
    /// to "Most Compatible": HEIC is refused). The core turns it upright, resizes and
    /// re-encodes it without EXIF, stores it and attaches it.
    ///
    /// - Throws: ``DoorstepError`` `PhotoRefused` (broken, too big, an unsupported format: take
    ///   another; the visit is unchanged); `NotFound`; `Invalid`.
    public func addPhoto(household: String, visit: String, photo: Data) async throws -> PhotoInfo {
        try await run { try self.store.addPhoto(household: household, visit: visit, photo: photo) }
    }

    /// Checks and stores a signature drawn on the pad (coordinates in points from the top
    /// left). With `mark`, a resident's mark (a cross, a thumbprint stroke) under the lighter
    /// check; it must then be signed with a witness.
    ///
    /// - Throws: ``DoorstepError`` `SignatureRefused` (blank, too little ink, outside the pad).
    public func captureSignature(pad: SignaturePad, mark: Bool = false) async throws -> CapturedSignature {
        try await run { try self.store.captureSignature(pad: pad, mark: mark) }
    }

    /// Signs the notice or pledge in force for a visit, by a resident, with a captured
    /// signature; returns the signed record's ID.
    ///
    /// - Throws: ``DoorstepError`` `Invalid` (the rule broken, with the field: a minor signing,
    ///   a signature not captured on this phone, a mark without a witness); `NotFound`.
    public func sign(household: String, visit: String, input: SignInput) async throws -> String {
        try await run { try self.store.sign(household: household, visit: visit, input: input) }
    }

    /// Finishes a visit. A completed visit needs a signed notice or pledge and a photo.
    ///
    /// - Throws: ``DoorstepError`` `VisitIncomplete` (with `missing`: `signed_paper`, `photo`);
    ///   `Invalid` (a reason missing, a time before the start, a visit already finished);
    ///   `NotFound`.
    public func finishVisit(household: String, visit: String, end: VisitEnd) async throws {
        try await run { try self.store.finishVisit(household: household, visit: visit, end: end) }
    }

    /// Voids a visit this phone recorded by mistake, with a reason (1 to 200 characters). The
    /// visit stays, marked void.
    ///
    /// - Throws: ``DoorstepError`` `Invalid` (no reason, already voided, another phone's
    ///   visit); `NotFound`.
    public func voidVisit(household: String, visit: String, reason: String) async throws {
        try await run { try self.store.voidVisit(household: household, visit: visit, reason: reason) }
    }

    /// What waits to be sent: changes, and files (photos, signatures).
    public func pending() async throws -> Pending {
        try await run { try self.store.pending() }
    }

    /// Fields two phones wrote differently while offline; the office resolves them.
    public func conflicts() async throws -> [ConflictInfo] {
        try await run { try self.store.conflicts() }
    }

    /// Changes the server refused, with its reasons; they stay on the phone.
    public func refused() async throws -> [RefusedInfo] {
        try await run { try self.store.refused() }
    }

    /// For a supervisor: finished visits on this phone that no follow-up call has checked yet,
    /// with the number to call, at most `limit` (1 to 500).
    ///
    /// - Throws: ``DoorstepError`` `Invalid` (`limit` out of range).
    public func followUpTargets(limit: UInt32 = 100) async throws -> [FollowUpTarget] {
        try await run { try self.store.followUpTargets(limit: limit) }
    }

    /// Records a supervisor's follow-up call about a visit; returns its ID. It is sent at the
    /// next sync.
    ///
    /// - Throws: ``DoorstepError`` `NotEnrolled`; `NotFound`; `Invalid` (a visit not finished,
    ///   answers given when nobody was reached, remarks over 500 characters).
    public func recordFollowUpCall(household: String, result: FollowUpResult) async throws -> String {
        try await run { try self.store.recordFollowUpCall(household: household, result: result) }
    }

    /// Syncs with the server: sends what waits, receives what changed, uploads photos and
    /// signatures. Returns the final report.
    ///
    /// `onProgress` hears the report after each answer from the server, on the sync's own
    /// thread (not the caller's actor); it must return quickly.
    ///
    /// Cancelling the calling task asks the core to stop before its next request (it does not
    /// break the one in flight); this returns only once the core has stopped, by throwing
    /// `CancellationError`. Whether it ends normally, by an error or by cancellation, what the
    /// server confirmed is kept and the rest waits for the next sync.
    ///
    /// - Throws: ``DoorstepError`` `NotEnrolled`; `Unauthorized` (the phone was revoked or its
    ///   token refused); `ServerKeyMismatch` (do not retry: call the office); `Offline`;
    ///   `Server`. `CancellationError` when the task was cancelled.
    public func syncNow(
        onProgress: @escaping @Sendable (SyncReport) -> Void = { _ in }
    ) async throws -> SyncReport {
        let cancel = SyncCancel()
        let relay = ProgressRelay(onProgress)
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    self.syncQueue.async {
                        continuation.resume(with: Result {
                            try self.store.syncNow(listener: relay, cancel: cancel)
                        })
                    }
                }
            } onCancel: {
                cancel.cancel()
            }
        } catch DoorstepError.Cancelled where Task.isCancelled {
            throw CancellationError()
        }
    }

    /// ``syncNow(onProgress:)`` as a stream: each stream runs one sync, yields where it stands
    /// after each answer from the server, then the final report, and finishes; it throws what
    /// ``syncNow(onProgress:)`` throws. It keeps only the newest report for a slow reader, so
    /// the reader never sees a stale one and always the last.
    ///
    /// The sync starts when the stream is made. Ending the iteration early (the task is
    /// cancelled, or the loop breaks) stops the sync as ``syncNow(onProgress:)`` describes.
    public func sync() -> AsyncThrowingStream<SyncReport, Error> {
        AsyncThrowingStream(bufferingPolicy: .bufferingNewest(1)) { continuation in
            let cancel = SyncCancel()
            let relay = ProgressRelay { continuation.yield($0) }
            continuation.onTermination = { termination in
                if case .cancelled = termination {
                    cancel.cancel()
                }
            }
            self.syncQueue.async {
                do {
                    let done = try self.store.syncNow(listener: relay, cancel: cancel)
                    relay.onProgress(report: done) // skipped when it repeats the last progress
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
        }
    }

    private func run<T>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await Self.perform(on: self.queue, body)
    }

    private static func perform<T>(
        on queue: DispatchQueue, _ body: @escaping @Sendable () throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result(catching: body)) }
        }
    }
}

extension Doorstep {
    /// The store file ``openDefault(keyProvider:queue:)`` uses:
    /// `Application Support/Doorstep/store.db` (with its `-wal` and `-shm` companions).
    public static func defaultStoreURL() throws -> URL {
        try FileManager.default
            .url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
            .appendingPathComponent("Doorstep", isDirectory: true)
            .appendingPathComponent("store.db", isDirectory: false)
    }

    /// Opens the phone's one store at ``defaultStoreURL()``, creating it (and its key) on
    /// first use, with the key `keyProvider` keeps. Its folder is excluded from backups: a
    /// restored copy cannot be opened without this phone's Keychain item, and the core does not
    /// support a store restored from a copy. Files keep iOS's default protection (readable
    /// after the first unlock), so a background sync can open the store.
    ///
    /// - Throws: ``StoreKeyError`` when the key cannot be had (the store is left untouched);
    ///   ``DoorstepError`` as ``open(path:key:queue:)``; file system errors for the folder.
    public static func openDefault(
        keyProvider: KeychainKeyProvider = KeychainKeyProvider(),
        queue: DispatchQueue = Doorstep.defaultQueue
    ) async throws -> Doorstep {
        try await perform(on: queue) {
            let url = try Doorstep.defaultStoreURL()
            var folder = url.deletingLastPathComponent()
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            var values = URLResourceValues()
            values.isExcludedFromBackup = true
            try folder.setResourceValues(values)
            var key = try keyProvider.storeKey(forStoreAt: url)
            defer { key.resetBytes(in: 0..<key.count) }
            let store = try DoorstepStore.open(path: url.path, key: key)
            return Doorstep(store: store, queue: queue)
        }
    }
}

/// Passes the core's progress on, skipping a report equal to the one before (the final report
/// usually repeats the last progress). Called from the sync's thread; the lock keeps it honest
/// should that ever change.
private final class ProgressRelay: SyncListener, @unchecked Sendable {
    private let forward: @Sendable (SyncReport) -> Void
    private let lock = NSLock()
    private var last: SyncReport?

    init(_ forward: @escaping @Sendable (SyncReport) -> Void) {
        self.forward = forward
    }

    func onProgress(report: SyncReport) {
        lock.lock()
        let repeated = report == last
        last = report
        lock.unlock()
        if !repeated {
            forward(report)
        }
    }
}
