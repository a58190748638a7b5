// The client side's TLS (docs/protocol.md A, B3-B5): a certificate made at start (ECDSA P-256, self-signed,
// held in memory only) or one the user gives, for clients configured with sslmode=require/verify-full.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { createSecureContext, type SecureContext } from 'node:tls';
import { randomBytes, webcrypto } from 'node:crypto';

export interface ClientTls {
  readonly context: SecureContext;
}

const MIN_VERSION = 'TLSv1.2';

/** A fresh self-signed certificate for localhost and this host's name; the key never leaves memory. */
export async function generatedClientTls(names: readonly string[] = ['localhost', hostname()]): Promise<ClientTls> {
  const { cert, key } = await selfSignedPem(names);
  return { context: createSecureContext({ cert, key, minVersion: MIN_VERSION }) };
}

/** An ECDSA P-256 key and a self-signed certificate naming `names`, 127.0.0.1 and ::1, as PEM. */
export async function selfSignedPem(names: readonly string[]): Promise<{ cert: string; key: string }> {
  // Loaded here, not at start: only --client-tls auto needs it, and after the listener is up.
  await import('reflect-metadata'); // @peculiar/x509 (through tsyringe) needs the Reflect metadata API
  const x509 = await import('@peculiar/x509');
  x509.cryptoProvider.set(webcrypto as unknown as Crypto);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomBytes(8).toString('hex'),
    name: 'CN=pg-iam-proxy local listener',
    notBefore: new Date(Date.now() - 3600_000),
    notAfter: new Date(Date.now() + 365 * 24 * 3600_000),
    keys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...[...new Set(names)].map((value) => ({ type: 'dns' as const, value })),
        { type: 'ip', value: '127.0.0.1' },
        { type: 'ip', value: '::1' },
      ]),
    ],
  });
  const key = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${key.match(/.{1,64}/g)!.join('\n')}\n-----END PRIVATE KEY-----\n`;
  return { cert: cert.toString('pem'), key: keyPem };
}

/** The user's certificate and key (PEM files), read once at start. Errors name the file. */
export function fileClientTls(certFile: string, keyFile: string): ClientTls {
  const read = (path: string, what: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`--client-tls-${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const cert = read(certFile, 'cert');
  const key = read(keyFile, 'key');
  try {
    return { context: createSecureContext({ cert, key, minVersion: MIN_VERSION }) };
  } catch (err) {
    throw new Error(
      `--client-tls-cert ${certFile} / --client-tls-key ${keyFile}: not a usable certificate and key (${(err as Error).message})`,
    );
  }
}
