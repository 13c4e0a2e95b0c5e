// The store's key in the iOS Keychain.

import Foundation
import Security

/// Keeps the key the phone's store is encrypted under: 32 random bytes from
/// `SecRandomCopyBytes`, made once and kept as a generic-password Keychain item that is
/// readable after the phone's first unlock (so a background sync can open the store) and only
/// on this device (`kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly`): it is never synced to
/// iCloud Keychain and never restored onto another phone from a backup.
///
/// **The rule**: a new key is made only when there is no store yet. When a store exists but
/// its key cannot be had, ``storeKey(forStoreAt:)`` throws a ``StoreKeyError`` and never makes
/// a new key: a new key cannot open the old file, and the app's next move would be to replace
/// the file, which would destroy the worker's unsent visits and signed papers. The app must
/// show the error, leave the file alone and send the worker to the office. (The store checks
/// the key itself: a wrong one fails to open with `DoorstepError.WrongKey`, writing nothing.)
///
/// Keychain items outlive the app: after a reinstall the old key is found and reused for the
/// new, empty store, which is harmless.
///
/// **Threads**: blocking (the Keychain is a system service); call it off the main thread, as
/// ``Doorstep/openDefault(keyProvider:queue:)`` does. Safe from several threads: all providers
/// in a process take one lock.
public struct KeychainKeyProvider: Sendable {
    /// The default Keychain service of the item.
    public static let defaultService = "app.doorstep.store-key"

    /// The store key's length, as the core requires.
    public static let keyLength = 32

    /// The item's `kSecAttrService`.
    public let service: String
    /// The item's `kSecAttrAccount`.
    public let account: String
    /// The item's `kSecAttrAccessGroup`, to share it with an app extension; `nil` for the app's
    /// default group.
    public let accessGroup: String?

    private static let lock = NSLock()

    public init(service: String = KeychainKeyProvider.defaultService, account: String = "store", accessGroup: String? = nil) {
        self.service = service
        self.account = account
        self.accessGroup = accessGroup
    }

    /// The key of the store at `storeURL` (32 bytes). The caller should wipe its copy
    /// (`resetBytes`) once the store is open.
    ///
    /// When a store exists at `storeURL` (or its `-wal`), only the kept key is returned, or an
    /// error thrown. When none exists, a kept key is reused if it is well formed; otherwise a
    /// new one is made and kept.
    ///
    /// - Throws: ``StoreKeyError/keyMissingForExistingStore`` (the item is gone but the store
    ///   is there); ``StoreKeyError/malformedKey(length:)``; ``StoreKeyError/keychainLocked``
    ///   (before the phone's first unlock since it started: try again after unlocking);
    ///   ``StoreKeyError/keychain(status:)``; ``StoreKeyError/randomFailed(status:)``.
    public func storeKey(forStoreAt storeURL: URL) throws -> Data {
        Self.lock.lock()
        defer { Self.lock.unlock() }

        let storeExists = FileManager.default.fileExists(atPath: storeURL.path)
            || FileManager.default.fileExists(atPath: storeURL.path + "-wal")
        if let kept = try read() {
            if kept.count == Self.keyLength {
                return kept
            }
            if storeExists {
                throw StoreKeyError.malformedKey(length: kept.count)
            }
            // No store was made under it: nothing to lock out. Start afresh.
            try delete()
        } else if storeExists {
            throw StoreKeyError.keyMissingForExistingStore
        }
        return try create()
    }

    private func create() throws -> Data {
        var key = Data(count: Self.keyLength)
        let status = key.withUnsafeMutableBytes { buffer in
            SecRandomCopyBytes(kSecRandomDefault, buffer.count, buffer.baseAddress!)
        }
        guard status == errSecSuccess else {
            throw StoreKeyError.randomFailed(status: status)
        }
        var attributes = baseQuery()
        attributes[kSecValueData as String] = key
        attributes[kSecAttrAccessible as String] = kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly
        switch SecItemAdd(attributes as CFDictionary, nil) {
        case errSecSuccess:
            return key
        case errSecDuplicateItem:
            // Another process (an app extension sharing the group) made one first: use that.
            key.resetBytes(in: 0..<key.count)
            guard let kept = try read(), kept.count == Self.keyLength else {
                throw StoreKeyError.keychain(status: errSecDuplicateItem)
            }
            return kept
        case errSecInteractionNotAllowed:
            throw StoreKeyError.keychainLocked
        case let other:
            throw StoreKeyError.keychain(status: other)
        }
    }

    private func read() throws -> Data? {
        var query = baseQuery()
        query[kSecReturnData as String] = true
        query[kSecMatchLimit as String] = kSecMatchLimitOne
        var result: CFTypeRef?
        switch SecItemCopyMatching(query as CFDictionary, &result) {
        case errSecSuccess:
            guard let data = result as? Data else {
                throw StoreKeyError.keychain(status: errSecDecode)
            }
            return data
        case errSecItemNotFound:
            return nil
        case errSecInteractionNotAllowed:
            throw StoreKeyError.keychainLocked
        case let other:
            throw StoreKeyError.keychain(status: other)
        }
    }

    private func delete() throws {
        let status = SecItemDelete(baseQuery() as CFDictionary)
        guard status == errSecSuccess || status == errSecItemNotFound else {
            throw StoreKeyError.keychain(status: status)
        }
    }

    private func baseQuery() -> [String: Any] {
        var query: [String: Any] = [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: service,
            kSecAttrAccount as String: account,
            // Never an iCloud Keychain item (ThisDeviceOnly items cannot be, but say it).
            kSecAttrSynchronizable as String: false,
        ]
        if let accessGroup {
            query[kSecAttrAccessGroup as String] = accessGroup
        }
        return query
    }
}

/// The store's key cannot be had. Never answer one by making a new key or deleting the store:
/// the store holds the worker's unsent visits and signed papers, and a new key cannot open it.
/// Show it, keep the file, and send the worker to the office (except for
/// ``keychainLocked``, which passes once the phone is unlocked). The descriptions are for logs
/// (English, no personal data); the app words what the worker sees.
public enum StoreKeyError: Error, Equatable, Sendable, LocalizedError {
    /// A store exists but the Keychain has no key for it (the item was deleted, or the store
    /// was copied from another phone).
    case keyMissingForExistingStore
    /// The kept item is not a 32-byte key.
    case malformedKey(length: Int)
    /// The Keychain cannot be read before the phone's first unlock since it started.
    case keychainLocked
    /// The Keychain answered with this `OSStatus`.
    case keychain(status: OSStatus)
    /// The system's random generator failed with this `OSStatus`.
    case randomFailed(status: OSStatus)

    public var errorDescription: String? {
        switch self {
        case .keyMissingForExistingStore:
            return "A store exists but the Keychain holds no key for it; refusing to make a new key, which could not open it."
        case let .malformedKey(length):
            return "The Keychain item holds \(length) bytes, not a \(KeychainKeyProvider.keyLength)-byte store key."
        case .keychainLocked:
            return "The Keychain is not readable before the phone's first unlock."
        case let .keychain(status):
            return "Keychain error \(status) (\(SecCopyErrorMessageString(status, nil) as String? ?? "unknown"))."
        case let .randomFailed(status):
            return "SecRandomCopyBytes failed with \(status)."
        }
    }
}
