package app.doorstep.android

import android.content.Context
import app.doorstep.core.DoorstepException
import app.doorstep.core.DoorstepStore
import java.io.File
import java.io.IOException
import java.io.RandomAccessFile
import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.withContext

/**
 * Opens the phone's one store: `noBackupFilesDir/doorstep/store.db` (with its `-wal` and
 * `-shm` companions), encrypted under the key [KeystoreKeyProvider] keeps.
 *
 * The store lives beside its wrapped key in [Context.getNoBackupFilesDir], which Android never
 * backs up or transfers: a restored copy could not be opened without this phone's Keystore key,
 * and the core does not support restoring a store from a copy (its evidence counters would
 * repeat). What a phone recorded is safe once synced; until then it is on this phone only.
 */
object DoorstepStoreFactory {
    /** The store's folder under [Context.getNoBackupFilesDir]. */
    const val DIRECTORY = "doorstep"

    /** The store's file name in [DIRECTORY]. */
    const val FILE_NAME = "store.db"

    /** The store file of this app. */
    fun storeFile(context: Context): File =
        File(File(context.noBackupFilesDir, DIRECTORY), FILE_NAME)

    /** Held across processes while a key is chosen and the store file created. */
    private const val LOCK_FILE = ".open.lock"

    /**
     * Opens the store, creating it (and its key) on first use. Runs on [dispatcher]; safe to
     * call from the main thread. Open it once per process and share the [Doorstep].
     *
     * @throws StoreKeyException the key cannot be had; the store is left untouched.
     * @throws DoorstepException.WrongKey the store does not open with the kept key.
     * @throws DoorstepException.Storage the file cannot be read or written, or a newer app
     *   wrote it.
     * @throws IOException the folder or the wrapped key cannot be read or written.
     */
    suspend fun open(
        context: Context,
        keyProvider: KeystoreKeyProvider = KeystoreKeyProvider(context),
        dispatcher: CoroutineDispatcher = Dispatchers.IO,
    ): Doorstep = withContext(dispatcher) {
        val file = storeFile(context)
        val dir = file.parentFile!!
        if (!dir.isDirectory && !dir.mkdirs()) throw IOException("cannot create $dir")
        // Two processes of the app starting at once must not each make a key and one of
        // them create the store under a key that is not the one kept: the file lock is held
        // from choosing the key until the store file exists.
        RandomAccessFile(File(dir, LOCK_FILE), "rw").channel.use { channel ->
            channel.lock().use {
                val key = keyProvider.storeKey(file)
                try {
                    Doorstep(DoorstepStore.open(file.path, key), dispatcher)
                } finally {
                    key.fill(0)
                }
            }
        }
    }
}
