/* SyncdMongoJavaServer.java - runs mongo-java-server (memory backend) on
 * 127.0.0.1:PORT until the process is stopped: the test harness's MongoDB
 * wire server with atomic filtered single-document updates (see
 * tests/support/servers.c and TESTING.md). Usage: SyncdMongoJavaServer PORT
 */
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

public final class SyncdMongoJavaServer {
    public static void main(String[] args) throws InterruptedException {
        if (args.length != 1) {
            System.err.println("usage: SyncdMongoJavaServer PORT");
            System.exit(2);
        }
        MongoServer server = new MongoServer(new MemoryBackend());
        server.bind("127.0.0.1", Integer.parseInt(args[0]));
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
        System.out.println("listening on 127.0.0.1:" + args[0]);
        Thread.currentThread().join();
    }
}
