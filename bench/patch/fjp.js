// fjp.js - the fast-json-patch peer of the patch benchmark.
//
//   node fjp.js bench A.json B.json RUNS   one JSON line of results
//   node fjp.js once A.json B.json OUT     load, compare(), write the patch
'use strict';
const fs = require('fs');
const jsonpatch = require('fast-json-patch');

function canonical(v) {
    if (Array.isArray(v))
        return '[' + v.map(canonical).join(',') + ']';
    if (v !== null && typeof v === 'object')
        return '{' + Object.keys(v).sort().map(
            (k) => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}';
    return JSON.stringify(v);
}

const [mode, aPath, bPath, arg] = process.argv.slice(2);
const a = JSON.parse(fs.readFileSync(aPath, 'utf8'));
const b = JSON.parse(fs.readFileSync(bPath, 'utf8'));
if (mode === 'once') {
    fs.writeFileSync(arg, JSON.stringify(jsonpatch.compare(a, b)));
    process.exit(0);
}
const times = [];
let patch;
for (let i = 0; i < Number(arg); i++) {
    const t0 = process.hrtime.bigint();
    patch = jsonpatch.compare(a, b);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
times.sort((x, y) => x - y);
let reproduces = false;
try {
    const out = jsonpatch.applyPatch(jsonpatch.deepClone(a), patch, true,
                                     false).newDocument;
    reproduces = canonical(out) === canonical(b);
} catch (e) {
    reproduces = false;
}
console.log(JSON.stringify({
    tool: 'fast-json-patch', runs: times.length,
    diff_ms: times[Math.floor(times.length / 2)], ops: patch.length,
    patch_bytes: Buffer.byteLength(JSON.stringify(patch)), reproduces,
}));
