/**
 * Throwaway PKI for one test control plane: a CA, the API server's serving certificate, an
 * admin client certificate (O=system:masters) and the service-account signing key pair.
 * ECDSA P-256 through WebCrypto keeps generation in the low milliseconds.
 */
// @peculiar/x509 resolves its ASN.1 parsers through tsyringe, which needs the Reflect polyfill first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
const crypto = webcrypto;
// @peculiar/x509 is typed against the DOM's Crypto; Node's webcrypto is the same API.
x509.cryptoProvider.set(crypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** PEM-encoded material for one test cluster. */
export interface TestPki {
  readonly caCert: string;
  /** The CA's private key, so the node's component certificates can be issued later. */
  readonly caKey: string;
  readonly servingCert: string;
  readonly servingKey: string;
  readonly adminCert: string;
  readonly adminKey: string;
  readonly serviceAccountPublicKey: string;
  readonly serviceAccountPrivateKey: string;
}

async function keyPair(): Promise<CryptoKeyPair> {
  return (await crypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function privatePem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

async function publicPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await crypto.subtle.exportKey('spki', key), 'PUBLIC KEY');
}

/** Generates fresh PKI valid for `days` days; serving SANs cover loopback and the in-cluster service names. */
export async function generateTestPki(days = 7, extraServingIps: readonly string[] = []): Promise<TestPki> {
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + days * 86_400_000);
  const caKeys = await keyPair();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=crema-testenv-ca',
    keys: caKeys,
    signingAlgorithm: alg,
    notBefore,
    notAfter,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });

  const leaf = async (subject: string, usage: x509.ExtendedKeyUsage, sans?: x509.JsonGeneralNames) => {
    const keys = await keyPair();
    const cert = await x509.X509CertificateGenerator.create({
      subject,
      issuer: ca.subject,
      publicKey: keys.publicKey,
      signingKey: caKeys.privateKey,
      signingAlgorithm: alg,
      notBefore,
      notAfter,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
          true,
        ),
        new x509.ExtendedKeyUsageExtension([usage]),
        await x509.AuthorityKeyIdentifierExtension.create(ca, false),
        ...(sans ? [new x509.SubjectAlternativeNameExtension(sans)] : []),
      ],
    });
    return { cert: cert.toString('pem'), key: await privatePem(keys.privateKey) };
  };

  const serving = await leaf('CN=kube-apiserver', x509.ExtendedKeyUsage.serverAuth, [
    { type: 'ip', value: '127.0.0.1' },
    { type: 'ip', value: '10.0.0.1' },
    ...extraServingIps.map((value) => ({ type: 'ip' as const, value })),
    { type: 'dns', value: 'localhost' },
    { type: 'dns', value: 'kubernetes' },
    { type: 'dns', value: 'kubernetes.default' },
    { type: 'dns', value: 'kubernetes.default.svc' },
    { type: 'dns', value: 'kubernetes.default.svc.cluster.local' },
  ]);
  const admin = await leaf('CN=admin, O=system:masters', x509.ExtendedKeyUsage.clientAuth);
  const sa = await keyPair();
  return {
    caCert: ca.toString('pem'),
    caKey: await privatePem(caKeys.privateKey),
    servingCert: serving.cert,
    servingKey: serving.key,
    adminCert: admin.cert,
    adminKey: admin.key,
    serviceAccountPublicKey: await publicPem(sa.publicKey),
    serviceAccountPrivateKey: await privatePem(sa.privateKey),
  };
}

/** A certificate and its private key, PEM. */
export interface IssuedCert {
  readonly cert: string;
  readonly key: string;
}

/**
 * Issues a certificate from the environment's CA: `subject` like `CN=system:node:n, O=system:nodes`,
 * for a client (`client`), a server (`server`, with `sans`), or both.
 */
export async function issueCertificate(
  pki: Pick<TestPki, 'caCert' | 'caKey'>,
  subject: string,
  usage: 'client' | 'server' | 'both',
  sans: { ips?: readonly string[]; dns?: readonly string[] } = {},
  days = 7,
): Promise<IssuedCert> {
  const ca = new x509.X509Certificate(pki.caCert);
  const caKey = await crypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(pki.caKey), alg, false, [
    'sign',
  ]);
  const keys = await keyPair();
  const usages = {
    client: [x509.ExtendedKeyUsage.clientAuth],
    server: [x509.ExtendedKeyUsage.serverAuth],
    both: [x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth],
  }[usage];
  const names: x509.JsonGeneralNames = [
    ...(sans.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
    ...(sans.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
  ];
  const cert = await x509.X509CertificateGenerator.create({
    subject,
    issuer: ca.subject,
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: alg,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + days * 86_400_000),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
        true,
      ),
      new x509.ExtendedKeyUsageExtension(usages),
      await x509.AuthorityKeyIdentifierExtension.create(ca, false),
      ...(names.length ? [new x509.SubjectAlternativeNameExtension(names)] : []),
    ],
  });
  return { cert: cert.toString('pem'), key: await privatePem(keys.privateKey) };
}
