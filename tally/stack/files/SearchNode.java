// The local stack's search engine: one OpenSearch node with the modules Tally uses loaded from
// the classpath (the jars tally.stack.java resolves), so no distribution needs unpacking.
// Run by the source launcher, no build step:
//   java -cp 'libs/*' SearchNode.java HOME HTTP_PORT TRANSPORT_PORT
// HOME holds config/ (log4j2.properties), data/ and logs/. Stops on SIGTERM.

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

public class SearchNode extends Node {
    static final List<Class<? extends Plugin>> MODULES = List.of(
        org.opensearch.transport.Netty4Plugin.class,
        org.opensearch.painless.PainlessPlugin.class,
        org.opensearch.analysis.common.CommonAnalysisPlugin.class,
        org.opensearch.index.reindex.ReindexPlugin.class,
        org.opensearch.index.mapper.MapperExtrasPlugin.class,
        org.opensearch.search.aggregations.matrix.MatrixAggregationPlugin.class);

    SearchNode(Environment environment, Collection<Class<? extends Plugin>> modules) {
        super(environment, modules, true);
    }

    static Settings settings(Path home, String httpPort, String transportPort) {
        return Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "tally-local")
            .put("node.name", "tally-search")
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", transportPort)
            .put("discovery.type", "single-node")
            // A nearly full disk must not turn the indices read-only under a test run.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .build();
    }

    public static void main(String[] args) throws Exception {
        Path home = Path.of(args[0]).toAbsolutePath();
        Path config = home.resolve("config");
        Files.createDirectories(config);
        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings(home, args[1], args[2]), Map.of(), config, () -> "tally-search");
        LogConfigurator.registerErrorListener();
        LogConfigurator.configure(environment);
        Files.createDirectories(environment.modulesFile());
        Files.createDirectories(environment.pluginsFile());
        Node node = new SearchNode(environment, MODULES).start();
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(30, java.util.concurrent.TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            }
            closed.countDown();
        }));
        closed.await();
    }
}
