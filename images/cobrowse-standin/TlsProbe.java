import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.Collections;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.SSLSocketFactory;
import javax.net.ssl.TrustManagerFactory;

/**
 * Connects to PROBE_HOST:PROBE_PORT over TLS every PROBE_INTERVAL_MS and prints one line per
 * attempt ("PROBE ok ..." or "PROBE fail ..."), with the trust material read once at start:
 * PROVIDER=JKS: the JVM's own default context, configured by -Djavax.net.ssl.trustStore and
 * -Djavax.net.ssl.trustStorePassword from setenv.sh's TRUSTED_CA and TRUSTSTORE_PASSWORD, as a
 * Java server is; PROVIDER=PEM: the certificates of TRUSTED_CA (a PEM bundle) in memory.
 */
public final class TlsProbe {
  private static String env(String name) {
    String value = System.getenv(name);
    if (value == null || value.isEmpty()) {
      throw new IllegalStateException(name + " is not set");
    }
    return value;
  }

  private static SSLSocketFactory factory(String provider, String trustedCa) throws Exception {
    if (provider.equals("JKS")) {
      KeyStore ks = KeyStore.getInstance("JKS");
      try (InputStream in = Files.newInputStream(Path.of(System.getProperty("javax.net.ssl.trustStore")))) {
        ks.load(in, System.getProperty("javax.net.ssl.trustStorePassword").toCharArray());
      }
      System.out.println("TRUST jks entries=" + Collections.list(ks.aliases()));
      return SSLContext.getDefault().getSocketFactory();
    }
    KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType());
    ks.load(null, null);
    CertificateFactory cf = CertificateFactory.getInstance("X.509");
    int i = 0;
    try (InputStream in = Files.newInputStream(Path.of(trustedCa))) {
      for (Certificate c : cf.generateCertificates(in)) {
        ks.setCertificateEntry("ca-" + i++, c);
      }
    }
    System.out.println("TRUST pem certificates=" + i);
    TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
    tmf.init(ks);
    SSLContext ctx = SSLContext.getInstance("TLS");
    ctx.init(null, tmf.getTrustManagers(), null);
    return ctx.getSocketFactory();
  }

  public static void main(String[] args) throws Exception {
    String provider = env("PROVIDER");
    String host = env("PROBE_HOST");
    int port = Integer.parseInt(env("PROBE_PORT"));
    long interval = Long.parseLong(System.getenv().getOrDefault("PROBE_INTERVAL_MS", "1000"));
    SSLSocketFactory sf = factory(provider, env("TRUSTED_CA"));
    while (true) {
      try (SSLSocket s = (SSLSocket) sf.createSocket(host, port)) {
        s.setSoTimeout(5000);
        SSLParameters p = s.getSSLParameters();
        p.setEndpointIdentificationAlgorithm("HTTPS");
        s.setSSLParameters(p);
        s.startHandshake();
        X509Certificate peer = (X509Certificate) s.getSession().getPeerCertificates()[0];
        System.out.println("PROBE ok issuer=" + peer.getIssuerX500Principal().getName());
      } catch (Exception e) {
        System.out.println("PROBE fail " + e.getClass().getSimpleName() + ": " + e.getMessage());
      }
      Thread.sleep(interval);
    }
  }
}
