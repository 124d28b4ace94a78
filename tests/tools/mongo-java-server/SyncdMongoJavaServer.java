/* SyncdMongoJavaServer.java - runs mongo-java-server (memory backend) on
 * 127.0.0.1:PORT until the process is stopped: the test harness's MongoDB
 * wire server with atomic filtered single-document updates (see
 * tests/support/servers.c and TESTING.md). Usage: SyncdMongoJavaServer PORT
 *
 * One change to the stock memory backend: a read returns copies of the
 * stored documents. mongo-java-server 1.47.0 applies an update in place on
 * the stored document (under the collection's lock) but sends the reply of
 * a find after the lock is released, so a find that races an update could
 * send a torn document (fields of both versions); syncd's 8 x 500
 * increments then lost updates. MongoDB never returns a torn document.
 */
import java.util.ArrayList;
import java.util.List;

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.backend.CollectionOptions;
import de.bwaldvogel.mongo.backend.Cursor;
import de.bwaldvogel.mongo.backend.CursorRegistry;
import de.bwaldvogel.mongo.backend.QueryParameters;
import de.bwaldvogel.mongo.backend.QueryResult;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import de.bwaldvogel.mongo.backend.memory.MemoryCollection;
import de.bwaldvogel.mongo.backend.memory.MemoryDatabase;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.oplog.Oplog;

public final class SyncdMongoJavaServer {
    /* Reads hand out copies taken under the collection's lock; the writes'
     * own reads (findAndModify, delete) keep the stored documents, which
     * they change. */
    static final class SnapshotCollection extends MemoryCollection {
        private final ThreadLocal<Boolean> writing =
            ThreadLocal.withInitial(() -> Boolean.FALSE);

        SnapshotCollection(MemoryDatabase db, String name,
                           CollectionOptions options, CursorRegistry cursors) {
            super(db, name, options, cursors);
        }

        @Override
        public synchronized QueryResult handleQuery(QueryParameters params) {
            QueryResult result = super.handleQuery(params);
            if (writing.get()) {
                return result;
            }
            return new QueryResult(copies(result), result.getCursorId());
        }

        @Override
        protected Cursor createCursor(List<Document> remaining) {
            return super.createCursor(copies(remaining));
        }

        @Override
        public synchronized Document findAndModify(Document query) {
            writing.set(Boolean.TRUE);
            try {
                Document reply = super.findAndModify(query);
                return reply == null ? null : reply.cloneDeeply();
            } finally {
                writing.set(Boolean.FALSE);
            }
        }

        @Override
        public synchronized int deleteDocuments(Document selector, int limit,
                                                Oplog oplog) {
            writing.set(Boolean.TRUE);
            try {
                return super.deleteDocuments(selector, limit, oplog);
            } finally {
                writing.set(Boolean.FALSE);
            }
        }

        private static List<Document> copies(Iterable<Document> documents) {
            List<Document> out = new ArrayList<>();
            for (Document d : documents) {
                out.add(d.cloneDeeply());
            }
            return out;
        }
    }

    static final class SnapshotDatabase extends MemoryDatabase {
        SnapshotDatabase(String name, CursorRegistry cursors) {
            super(name, cursors);
        }

        @Override
        protected MemoryCollection openOrCreateCollection(
            String name, CollectionOptions options) {
            return new SnapshotCollection(this, name, options, cursorRegistry);
        }
    }

    static final class SnapshotBackend extends MemoryBackend {
        @Override
        public MemoryDatabase openOrCreateDatabase(String name) {
            return new SnapshotDatabase(name, getCursorRegistry());
        }
    }

    public static void main(String[] args) throws InterruptedException {
        if (args.length != 1) {
            System.err.println("usage: SyncdMongoJavaServer PORT");
            System.exit(2);
        }
        MongoServer server = new MongoServer(new SnapshotBackend());
        server.bind("127.0.0.1", Integer.parseInt(args[0]));
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
        System.out.println("listening on 127.0.0.1:" + args[0]);
        Thread.currentThread().join();
    }
}
