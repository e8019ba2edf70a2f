import java.io.FileInputStream;
import java.io.InputStream;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;

/**
 * A TLS client that trusts only the given trust store, as Co-browse Server does.
 *
 * <p>Usage: TlsProbe HOST PORT TRUSTSTORE [PASSWORD]. TRUSTSTORE is a JKS (with PASSWORD) or,
 * when its name ends in .pem, a PEM bundle. Host name verification is on (HTTPS endpoint
 * identification), so the server certificate must also match HOST. Prints "OK protocol" and
 * exits 0 after a completed handshake; prints "FAIL reason" and exits 1 otherwise.
 */
public final class TlsProbe {
  public static void main(String[] args) throws Exception {
    String host = args[0];
    int port = Integer.parseInt(args[1]);
    KeyStore trust;
    if (args[2].endsWith(".pem")) {
      trust = KeyStore.getInstance(KeyStore.getDefaultType());
      trust.load(null, null);
      try (InputStream in = new FileInputStream(args[2])) {
        int i = 0;
        for (Certificate c : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
          trust.setCertificateEntry("pem-" + (++i), c);
        }
      }
    } else {
      trust = KeyStore.getInstance("JKS");
      try (InputStream in = new FileInputStream(args[2])) {
        trust.load(in, args[3].toCharArray());
      }
    }
    TrustManagerFactory tmf =
        TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
    tmf.init(trust);
    SSLContext context = SSLContext.getInstance("TLS");
    context.init(null, tmf.getTrustManagers(), null);
    try (SSLSocket socket = (SSLSocket) context.getSocketFactory().createSocket(host, port)) {
      SSLParameters params = socket.getSSLParameters();
      params.setEndpointIdentificationAlgorithm("HTTPS");
      socket.setSSLParameters(params);
      socket.setSoTimeout(10000);
      socket.startHandshake();
      System.out.println("OK " + socket.getSession().getProtocol());
    } catch (javax.net.ssl.SSLException e) {
      System.out.println("FAIL " + e.getMessage());
      System.exit(1);
    }
  }
}
