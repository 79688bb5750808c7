// Hostile JavaScript guest for the sandbox tests: config `{"attack": ...}` picks one attack.
//   loop    spin forever (timeout, or out_of_fuel with a small budget)
//   memory  allocate 1 MiB buffers until something gives (out_of_memory)
//   read    read `config.paths` through the WASI filesystem (world.wit), resolving each
//           path against the preopened directories as a libc does (capability_denied
//           outside the grants: the errno text is the evidence, as for Rust and Python)
//   raise   throw through the SDK (a retryable handler error, as the SDK promises)
//   retry_later  not an attack: the SDK's `Retryable` with a server-requested delay
//   panic   throw past the SDK, out of the component's export (a trap)
import { getDirectories } from "wasi:filesystem/preopens@0.2.12";
import { exportHandler, Permanent, Retryable } from "./tasker-sdk.js"; // copied beside this file by the build

// WASI error codes as a libc words them (the host classifies denials from this text).
const ERRNO = {
  "not-permitted": "Operation not permitted",
  access: "Permission denied",
  "no-entry": "No such file or directory",
  "read-only": "Read-only file system",
};

function readFile(path) {
  // The longest preopen that contains the path, as wasi-libc resolves it.
  let best = null;
  for (const [dir, guest] of getDirectories()) {
    const prefix = guest.endsWith("/") ? guest : guest + "/";
    if ((path === guest || path.startsWith(prefix)) && (!best || guest.length > best[1].length)) {
      best = [dir, guest];
    }
  }
  if (!best) throw new Error(`reading ${path}: No such file or directory`);
  const rel = path.slice(best[1].length).replace(/^\/+/, "") || ".";
  try {
    const file = best[0].openAt({ symlinkFollow: true }, rel, {}, { read: true });
    const chunks = [];
    let offset = 0n;
    for (;;) {
      const [bytes, eof] = file.read(65536n, offset);
      chunks.push(bytes);
      offset += BigInt(bytes.length);
      if (eof || bytes.length === 0) break;
    }
    const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.length;
    }
    return new TextDecoder().decode(all);
  } catch (e) {
    const code = e && e.payload !== undefined ? e.payload : e;
    throw new Error(`reading ${path}: ${ERRNO[code] || String(code)}`);
  }
}

const attack = exportHandler((ctx) => {
  const kind = ctx.config.attack;
  if (kind === "loop") {
    let x = 0;
    for (;;) x = (x + 1) | 0;
  }
  if (kind === "memory") {
    const hoard = [];
    for (;;) {
      const block = new Uint8Array(1 << 20);
      for (let i = 0; i < block.length; i += 4096) block[i] = 0xa5;
      hoard.push(block);
    }
  }
  if (kind === "read") return ctx.config.paths.map(readFile);
  if (kind === "retry_later") throw new Retryable("rate limited", ctx.config.retry_after_ms);
  if (kind === "raise") throw new Error(`boom: the guest gave up on attempt ${ctx.attempt}`);
  throw new Permanent(`unknown attack ${JSON.stringify(kind)}`);
});

export function handle(raw) {
  if (JSON.parse(raw.config).attack === "panic") {
    // A plain string is not a `step-error`: the export cannot lower it.
    throw `boom: uncaught on attempt ${raw.attempt}`;
  }
  return attack(raw);
}
