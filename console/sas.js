// Service connection strings and SAS tokens, computed in the browser with WebCrypto
// (docs/protocol.md §1.1, §1.3, §1.5, §1.7).

// Parses `name=value;…` (§1.1: each element is cut at its first '=', so base64 keeps its
// padding; empty names or values are skipped; a later duplicate wins). Throws an Error that
// names what is missing when it is not a service connection string (§1.3).
export function parseServiceConnectionString(text) {
  const fields = {};
  for (const element of text.trim().split(';')) {
    const cut = element.indexOf('=');
    if (cut <= 0) continue;
    const name = element.slice(0, cut).trim();
    const value = element.slice(cut + 1).trim();
    if (name && value) fields[name] = value;
  }
  const missing = ['HostName', 'SharedAccessKeyName', 'SharedAccessKey'].filter((n) => !fields[n]);
  if (missing.length) {
    throw new Error(`Not a service connection string: ${missing.join(', ')} missing ` +
      '(expected HostName=…;SharedAccessKeyName=…;SharedAccessKey=…)');
  }
  if (fields.DeviceId) throw new Error('This is a device connection string; sign in with a service policy (e.g. iothubowner)');
  return { hostName: fields.HostName, keyName: fields.SharedAccessKeyName, key: fields.SharedAccessKey };
}

// encodeURIComponent plus ! ' ( ) *, as the SDKs encode `sig` (§1.5).
export function encodeStrict(text) {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function base64ToBytes(text) {
  const binary = atob(text);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function bytesToBase64(bytes) {
  let binary = '';
  for (const b of new Uint8Array(bytes)) binary += String.fromCharCode(b);
  return btoa(binary);
}

// Signs service tokens for one policy. The HMAC key is the base64-decoded SharedAccessKey.
export class ServiceTokenSigner {
  static async create({ hostName, keyName, key }) {
    if (!globalThis.crypto || !crypto.subtle) {
      throw new Error('This page is not a secure context, so the browser offers no WebCrypto to sign ' +
        'requests: open the console over HTTPS (or on localhost).');
    }
    let raw;
    try {
      raw = base64ToBytes(key);
    } catch {
      throw new Error('SharedAccessKey is not valid base64');
    }
    const hmac = await crypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    return new ServiceTokenSigner(hostName, keyName, hmac);
  }

  constructor(hostName, keyName, hmac) {
    this.hostName = hostName;
    this.keyName = keyName;
    this.hmac = hmac;
  }

  // `SharedAccessSignature sr=<host>&sig=…&skn=<policy>&se=<expiry>`, valid for `lifetimeSeconds`.
  // The resource is the bare host name, not encoded (§1.7); the signed text is `<sr>\n<se>`.
  async token(lifetimeSeconds = 3600) {
    const se = Math.ceil(Date.now() / 1000) + lifetimeSeconds;
    const signed = new TextEncoder().encode(`${this.hostName}\n${se}`);
    const sig = bytesToBase64(await crypto.subtle.sign('HMAC', this.hmac, signed));
    return `SharedAccessSignature sr=${this.hostName}&sig=${encodeStrict(sig)}&skn=${encodeStrict(this.keyName)}&se=${se}`;
  }
}
