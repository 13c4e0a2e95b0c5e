package app.doorstep.android

import android.annotation.TargetApi
import android.content.Context
import android.os.Build
import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyPermanentlyInvalidatedException
import android.security.keystore.KeyProperties
import android.util.AtomicFile
import java.io.File
import java.io.IOException
import java.security.GeneralSecurityException
import java.security.KeyStore
import java.security.ProviderException
import java.security.SecureRandom
import java.security.UnrecoverableKeyException
import javax.crypto.AEADBadTagException
import javax.crypto.Cipher
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec

/**
 * Keeps the key the phone's store is encrypted under (32 random bytes, made once with
 * [SecureRandom]) so that it never lies in the clear on disk: it is wrapped (AES-256-GCM) by a
 * non-exportable key of the Android Keystore, held in StrongBox where the phone has one, and
 * the wrapped bytes with their IV are kept in [wrappedKeyFile], in app-private storage that is
 * never backed up ([Context.getNoBackupFilesDir]). Each open unwraps it again.
 *
 * **The rule**: a new key is made only when there is no store yet. When a store exists but its
 * key cannot be had, [storeKey] throws a [StoreKeyException] and never makes a new key: a new
 * key cannot open the old file, and the app's next move would be to replace the file, which
 * would destroy the worker's unsent visits and signed papers. The app must show the error,
 * leave the file alone and send the worker to the office. (The store itself checks the key:
 * a wrong one fails to open with `DoorstepException.WrongKey`, and nothing is written.)
 *
 * The Keystore key needs no screen lock and no user authentication, so a background sync can
 * open the store while the phone is locked (after its first unlock). It is lost only in rare
 * cases (a keystore reset by the system or by some vendors' software updates, app data copied
 * to another phone); the data goes with it, by design: the key must not exist anywhere else.
 *
 * Thread rules: blocking (the Keystore, StrongBox especially, can take a few hundred
 * milliseconds, and the file is read and written); call it off the main thread. Safe to call
 * from several threads: all instances in a process take one lock.
 *
 * @property wrappedKeyFile where the wrapped key is kept; by default
 *   `noBackupFilesDir/doorstep/store-key.wrapped`.
 * @property alias the Keystore alias of the wrapping key.
 */
class KeystoreKeyProvider(
    val wrappedKeyFile: File,
    val alias: String = DEFAULT_ALIAS,
) {
    /** The provider with the default file in [Context.getNoBackupFilesDir]. */
    constructor(context: Context) : this(File(context.noBackupFilesDir, DEFAULT_WRAPPED_KEY_PATH))

    /**
     * The key of the store at [storeFile]: a new array of 32 bytes, which the caller should
     * wipe (`fill(0)`) once the store is open.
     *
     * When a store exists at [storeFile] (or its `-wal`), only its kept key is returned, or an
     * error thrown. When none exists, a kept key is reused if it still unwraps; otherwise a new
     * key is made (no store was encrypted under the old one, so nothing is locked out), kept
     * wrapped, checked to unwrap, and returned.
     *
     * @throws StoreKeyException.KeystoreKeyLost the Keystore no longer has the wrapping key.
     * @throws StoreKeyException.WrappedKeyMissing a store exists, its wrapped key does not.
     * @throws StoreKeyException.WrappedKeyUnreadable the wrapped key is damaged or does not
     *   decrypt with the Keystore key.
     * @throws IOException the wrapped key's file cannot be read or written.
     * @throws GeneralSecurityException the Keystore failed otherwise.
     */
    fun storeKey(storeFile: File): ByteArray {
        synchronized(LOCK) {
            val storeExists = storeFile.exists() || File(storeFile.path + "-wal").exists()
            val wrapped = readWrapped()
            if (wrapped != null) {
                try {
                    return unwrap(wrapped)
                } catch (e: StoreKeyException) {
                    if (storeExists) throw e
                    // No store was made under the lost key: nothing to lock out. Start afresh.
                    discardWrappingKey()
                }
            } else if (storeExists) {
                throw StoreKeyException.WrappedKeyMissing(
                    "A store exists at ${storeFile.name} but no wrapped key is kept for it; " +
                        "refusing to make a new key, which could not open it."
                )
            }
            return createKey()
        }
    }

    /** Makes, keeps and returns a new store key; only while no store exists. */
    private fun createKey(): ByteArray {
        val key = ByteArray(STORE_KEY_BYTES).also { SecureRandom().nextBytes(it) }
        try {
            writeWrapped(wrap(key))
            // Prove the kept copy opens before any store is created under this key.
            val check = unwrap(readWrapped() ?: throw IOException("the wrapped key just written is gone"))
            val same = check.contentEquals(key)
            check.fill(0)
            if (!same) {
                throw StoreKeyException.WrappedKeyUnreadable("The wrapped key read back differs from the key written.")
            }
            return key
        } catch (e: Exception) {
            key.fill(0)
            // No store exists under this key yet: drop it, so that the next call starts again.
            wrappedKeyFile.delete()
            throw e
        }
    }

    private fun wrap(key: ByteArray): ByteArray {
        val cipher = Cipher.getInstance(TRANSFORMATION)
        cipher.init(Cipher.ENCRYPT_MODE, keystoreKey() ?: generateWrappingKey())
        cipher.updateAAD(aad())
        val sealed = cipher.doFinal(key)
        val iv = cipher.iv
        return byteArrayOf(FORMAT_VERSION, iv.size.toByte()) + iv + sealed
    }

    private fun unwrap(blob: ByteArray): ByteArray {
        if (blob.size < 2 || blob[0] != FORMAT_VERSION) {
            throw StoreKeyException.WrappedKeyUnreadable("The wrapped key has an unknown format.")
        }
        val ivLength = blob[1].toInt() and 0xff
        if (ivLength != GCM_IV_BYTES || blob.size != 2 + ivLength + STORE_KEY_BYTES + GCM_TAG_BYTES) {
            throw StoreKeyException.WrappedKeyUnreadable("The wrapped key has the wrong length.")
        }
        val wrappingKey = keystoreKey() ?: throw StoreKeyException.KeystoreKeyLost(
            "The Android Keystore no longer holds '$alias', the key that wraps the store key."
        )
        val key = try {
            val cipher = Cipher.getInstance(TRANSFORMATION)
            cipher.init(
                Cipher.DECRYPT_MODE,
                wrappingKey,
                GCMParameterSpec(GCM_TAG_BYTES * 8, blob, 2, ivLength),
            )
            cipher.updateAAD(aad())
            cipher.doFinal(blob, 2 + ivLength, blob.size - 2 - ivLength)
        } catch (e: KeyPermanentlyInvalidatedException) {
            throw StoreKeyException.KeystoreKeyLost("The Keystore invalidated '$alias'.", e)
        } catch (e: AEADBadTagException) {
            throw StoreKeyException.WrappedKeyUnreadable(
                "The wrapped key does not decrypt with '$alias' (damaged, or wrapped by another key).",
                e,
            )
        }
        if (key.size != STORE_KEY_BYTES) {
            key.fill(0)
            throw StoreKeyException.WrappedKeyUnreadable("The unwrapped key is not $STORE_KEY_BYTES bytes.")
        }
        return key
    }

    /** The wrapping key, or `null` when the Keystore has none under [alias]. */
    private fun keystoreKey(): SecretKey? {
        val keyStore = KeyStore.getInstance(ANDROID_KEYSTORE).apply { load(null) }
        return try {
            keyStore.getKey(alias, null) as? SecretKey
        } catch (e: UnrecoverableKeyException) {
            throw StoreKeyException.KeystoreKeyLost("The Keystore cannot recover '$alias'.", e)
        }
    }

    /** Removes the wrapping key; only while no store exists. */
    private fun discardWrappingKey() {
        KeyStore.getInstance(ANDROID_KEYSTORE).apply { load(null) }.deleteEntry(alias)
    }

    private fun generateWrappingKey(): SecretKey {
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.P) {
            generateInStrongBox()?.let { return it }
        }
        return KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, ANDROID_KEYSTORE)
            .apply { init(wrappingKeySpec().build()) }
            .generateKey()
    }

    /** In the phone's StrongBox secure element; `null` when it has none or it refuses. */
    @TargetApi(Build.VERSION_CODES.P)
    private fun generateInStrongBox(): SecretKey? = try {
        KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, ANDROID_KEYSTORE)
            .apply { init(wrappingKeySpec().setIsStrongBoxBacked(true).build()) }
            .generateKey()
    } catch (e: ProviderException) {
        // StrongBoxUnavailableException, or a StrongBox that cannot make this key: the
        // Trusted Execution Environment (the default) keeps it instead.
        null
    }

    private fun wrappingKeySpec(): KeyGenParameterSpec.Builder =
        KeyGenParameterSpec.Builder(alias, KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT)
            .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
            .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
            .setKeySize(256)
            // The Keystore picks each IV; a caller-chosen IV is refused.
            .setRandomizedEncryptionRequired(true)

    private fun aad(): ByteArray = "$AAD_LABEL:$alias".toByteArray(Charsets.UTF_8)

    private fun readWrapped(): ByteArray? {
        if (!wrappedKeyFile.exists()) return null
        return AtomicFile(wrappedKeyFile).readFully()
    }

    private fun writeWrapped(blob: ByteArray) {
        wrappedKeyFile.parentFile?.let { dir ->
            if (!dir.isDirectory && !dir.mkdirs()) throw IOException("cannot create $dir")
        }
        val file = AtomicFile(wrappedKeyFile)
        val out = file.startWrite()
        try {
            out.write(blob)
            file.finishWrite(out) // flushes to disk, then renames over the old file
        } catch (e: IOException) {
            file.failWrite(out)
            throw e
        }
    }

    companion object {
        /** The default Keystore alias of the wrapping key. */
        const val DEFAULT_ALIAS = "doorstep-store-key-wrap"

        /** The default place of the wrapped key, under [Context.getNoBackupFilesDir]. */
        const val DEFAULT_WRAPPED_KEY_PATH = "doorstep/store-key.wrapped"

        /** The store key's length, as the core requires. */
        const val STORE_KEY_BYTES = 32

        private const val ANDROID_KEYSTORE = "AndroidKeyStore"
        private const val TRANSFORMATION = "AES/GCM/NoPadding"
        private const val GCM_IV_BYTES = 12
        private const val GCM_TAG_BYTES = 16

        /** The wrapped key's file: version, IV length, IV, then the sealed key and its tag. */
        private const val FORMAT_VERSION: Byte = 1

        /** Bound into the seal, so that the blob is not taken for anything else. */
        private const val AAD_LABEL = "doorstep-store-key-v1"

        private val LOCK = Any()
    }
}

/**
 * The store's key cannot be had. Never answer this by making a new key or deleting the store:
 * the store holds the worker's unsent visits and signed papers, and a new key cannot open it.
 * Show it, keep the file, and send the worker to the office. Messages are for logs (English,
 * no personal data); the app words what the worker sees.
 */
sealed class StoreKeyException(message: String, cause: Throwable? = null) : Exception(message, cause) {
    /**
     * The Android Keystore no longer has the wrapping key (a keystore reset, a system update
     * that dropped it, app data copied to another phone). The store cannot be opened on this
     * phone again.
     */
    class KeystoreKeyLost(message: String, cause: Throwable? = null) : StoreKeyException(message, cause)

    /** A store exists but no wrapped key is kept for it (the key file was deleted or lost). */
    class WrappedKeyMissing(message: String) : StoreKeyException(message)

    /** The wrapped key is damaged, or was wrapped by a key this Keystore does not have. */
    class WrappedKeyUnreadable(message: String, cause: Throwable? = null) : StoreKeyException(message, cause)
}
