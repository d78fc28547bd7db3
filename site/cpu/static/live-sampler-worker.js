// The live sampler's worker: Algorithm 4 on the ONNX export of the class-conditioned UNet, with
// onnxruntime-web on WebAssembly (one thread) or WebGPU. It mirrors diffusion/live.py line for line
// (the noise generator and the step); every constant comes from the settings JSON the build wrote.
//
// Messages in:  {type: "load", model, settings, backend, bundle, binary}  (URLs; backend "wasm" | "webgpu")
//               {type: "sample", digits, guidance, steps, seed, id} | {type: "stop"}
// Messages out: {type: "ready", backend, loadMs} | {type: "step", id, i, steps, t, x, x0, msPerStep}
//               {type: "done", id, x, xT, steps, msPerStep, totalMs} | {type: "stopped", id}
//               {type: "error", message}
// The page sends "sample" only when no run is in progress (a session runs one batch at a time), and
// starts a new worker to change the backend (each backend is its own build of the runtime).

let ort = null;
let session = null;
let cfg = null;
let current = 0; // the id of the run in progress; "stop" clears it and the run ends after its step

// session.run on one WASM thread settles without leaving the task, so a "stop" message would wait for
// the whole run; each step ends by letting queued messages in (a MessageChannel task, not a clamped timer).
const tick = new MessageChannel();
function letMessagesIn() {
  return new Promise((resolve) => {
    tick.port1.onmessage = () => resolve();
    tick.port2.postMessage(0);
  });
}

// --- portable noise (diffusion/live.py: _mix32, _uniform, portable_normal) -----------------------

const GOLDEN = 0x9e3779b9;

function mix32(x) {
  x >>>= 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

function streamKey(seed, which) {
  return mix32((seed ^ Math.imul(which + 1, GOLDEN)) >>> 0);
}

function uniform(key, counter) {
  const h = mix32((mix32((counter ^ key) >>> 0) + key) >>> 0);
  return ((h >>> 8) + 0.5) / 16777216;
}

// The standard normals of one digit's draw-th noise image (0 is x_T), written into out at offset.
function portableNormal(seed, digit, draw, size, out, offset) {
  const k1 = streamKey(seed, 0), k2 = streamKey(seed, 1);
  const base = (digit * cfg.noise.draws_per_digit + draw) * size;
  for (let i = 0; i < size; i++) {
    const u1 = uniform(k1, base + i), u2 = uniform(k2, base + i);
    out[offset + i] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
}

function noise(seed, digits, draw, size) {
  const out = new Float32Array(digits.length * size);
  digits.forEach((d, j) => portableNormal(seed, d, draw, size, out, j * size));
  return out;
}

// --- Algorithm 4 -----------------------------------------------------------------------------

function stepCoefficients(t, s) {
  if (s === t - 1) return [cfg.alphas[t], cfg.betas[t]];
  const alpha = cfg.alpha_bars[t] / cfg.alpha_bars[s];
  return [alpha, 1 - alpha];
}

async function sample({digits, guidance, steps, seed, id}) {
  const T = cfg.T, size = cfg.shape.reduce((a, b) => a * b, 1), n = digits.length, classes = cfg.num_classes;
  if (T % steps !== 0) throw new Error(`${steps} steps do not divide T = ${T}`);
  const k = T / steps, timesteps = [];
  for (let t = T; t > 0; t -= k) timesteps.push(t);
  // The graph returns eps_c (the one-hot classes) and eps_u (the null class) for the same x_t.
  const c = new Float32Array(n * classes);
  digits.forEach((d, j) => { c[j * classes + d] = 1; });
  const cTensor = new ort.Tensor("float32", c, [n, classes]);
  const [inX, inC, inT] = cfg.onnx.inputs, [outC, outU] = cfg.onnx.outputs;
  let x = noise(seed, digits, 0, size);
  const xT = x.slice();
  const tt = new Float32Array(n);
  const started = performance.now();
  for (let i = 0; i < timesteps.length; i++) {
    if (id !== current) {
      self.postMessage({type: "stopped", id});
      return;
    }
    const t = timesteps[i], s = i + 1 < timesteps.length ? timesteps[i + 1] : 0;
    tt.fill(t / T);
    const out = await session.run({
      [inX]: new ort.Tensor("float32", x, [n, ...cfg.shape]), [inC]: cTensor, [inT]: new ort.Tensor("float32", tt, [n]),
    });
    const ec = out[outC].data, eu = out[outU].data;
    const abarT = cfg.alpha_bars[t], abarS = cfg.alpha_bars[s];
    const [alpha, beta] = stepCoefficients(t, s);
    const cx0 = Math.sqrt(abarS) * beta / (1 - abarT), cxt = Math.sqrt(alpha) * (1 - abarS) / (1 - abarT);
    const sqrtOneMinusAbarT = Math.sqrt(1 - abarT), sqrtAbarT = Math.sqrt(abarT), sigma = Math.sqrt(beta);
    const z = s > 0 ? noise(seed, digits, i + 1, size) : null;
    const next = new Float32Array(n * size), x0 = new Float32Array(n * size);
    for (let j = 0; j < n * size; j++) {
      const eps = eu[j] + guidance * (ec[j] - eu[j]); // eps_u + gamma (eps_c - eps_u)
      x0[j] = (x[j] - sqrtOneMinusAbarT * eps) / sqrtAbarT;
      const mean = cx0 * x0[j] + cxt * x[j];
      next[j] = z ? mean + sigma * z[j] : mean;
    }
    x = next;
    const msPerStep = (performance.now() - started) / (i + 1);
    self.postMessage({type: "step", id, i: i + 1, steps: timesteps.length, t: s, x, x0, msPerStep});
    await letMessagesIn();
  }
  const totalMs = performance.now() - started;
  self.postMessage({type: "done", id, x, xT, steps: timesteps.length, msPerStep: totalMs / timesteps.length, totalMs});
}

self.onmessage = async (event) => {
  const msg = event.data;
  try {
    if (msg.type === "load") {
      const started = performance.now();
      if (msg.backend === "webgpu" && !(navigator.gpu && await navigator.gpu.requestAdapter())) {
        throw new Error("this browser offers no WebGPU adapter; choose WebAssembly");
      }
      ort = await import(msg.bundle);
      ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which GitHub Pages cannot give
      // Only the binary's place: a folder here would also send the runtime for its JavaScript glue, which
      // the bundle already holds (and the site does not vendor).
      ort.env.wasm.wasmPaths = {wasm: msg.binary};
      cfg = await (await fetch(msg.settings)).json();
      session = await ort.InferenceSession.create(msg.model, {executionProviders: [msg.backend],
                                                              graphOptimizationLevel: "all"});
      const backend = msg.backend === "webgpu" ? "WebGPU" : "WebAssembly, one thread";
      self.postMessage({type: "ready", backend, loadMs: performance.now() - started});
    } else if (msg.type === "sample") {
      current = msg.id;
      await sample(msg);
    } else if (msg.type === "stop") {
      current = 0;
    }
  } catch (err) {
    self.postMessage({type: "error", message: String(err && err.message || err)});
  }
};
