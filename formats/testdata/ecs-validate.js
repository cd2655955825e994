#!/usr/bin/env node
// Validate ECS documents (one JSON object per line on stdin) against @elastic/ecs EcsFlat.
// From /work/shared/reference/integrations-howto.md section 6 (tested there), unchanged
// in its checks. usage: NODE_PATH=<dir>/node_modules node ecs-validate.js --custom xen --custom vmlineage < docs.ndjson
'use strict';
const { EcsFlat, EcsVersion } = require('@elastic/ecs');
const net = require('net');
const args = process.argv.slice(2);
const custom = [];
for (let i = 0; i < args.length; i++) if (args[i] === '--custom') custom.push(args[++i]);

const objectLike = new Set(['object', 'flattened', 'nested']);
const leafPrefixes = new Set(Object.keys(EcsFlat));

function flatten(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    const def = EcsFlat[key];
    if (v !== null && typeof v === 'object' && !Array.isArray(v) && (key === 'labels' || !(def && objectLike.has(def.type))))
      flatten(v, key, out);
    else out.push([key, v]);
  }
  return out;
}
const isDate = (v) => (typeof v === 'number' && Number.isFinite(v)) ||
  (typeof v === 'string' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/.test(v));
const checks = {
  keyword: (v) => typeof v === 'string', constant_keyword: (v) => typeof v === 'string',
  wildcard: (v) => typeof v === 'string', match_only_text: (v) => typeof v === 'string', text: (v) => typeof v === 'string',
  long: (v) => Number.isInteger(v), integer: (v) => Number.isInteger(v) && Math.abs(v) < 2 ** 31,
  float: (v) => typeof v === 'number', double: (v) => typeof v === 'number', scaled_float: (v) => typeof v === 'number',
  boolean: (v) => typeof v === 'boolean', date: isDate, ip: (v) => typeof v === 'string' && net.isIP(v) !== 0,
  object: (v) => typeof v === 'object', flattened: (v) => typeof v === 'object', nested: (v) => typeof v === 'object',
  geo_point: (v) => typeof v === 'object' || typeof v === 'string',
};

function validate(doc) {
  const errs = [], warns = [];
  for (const req of ['@timestamp', 'ecs.version']) if (!flatten(doc, '', []).some(([k]) => k === req)) errs.push(`missing required ${req}`);
  for (const [key, val] of flatten(doc, '', [])) {
    const def = EcsFlat[key];
    if (!def) {
      const ns = key.split('.')[0];
      if (custom.includes(ns)) continue;
      if (key.startsWith('labels.')) { if (typeof val !== 'string') warns.push(`${key}: labels values should be strings (keyword)`); continue; }
      const parts = key.split('.');
      for (let i = 1; i < parts.length; i++) { const p = parts.slice(0, i).join('.'); if (leafPrefixes.has(p) && !objectLike.has(EcsFlat[p].type)) errs.push(`${key}: ${p} is an ECS leaf of type ${EcsFlat[p].type}, cannot have sub-fields`); }
      errs.push(`${key}: not an ECS ${EcsVersion} field and not in a custom namespace (${custom.join(',') || 'none given'})`);
      continue;
    }
    const values = Array.isArray(val) ? val : [val];
    if ((def.normalize || []).includes('array') && !Array.isArray(val)) warns.push(`${key}: ECS expects an array`);
    for (const v of values) {
      if (v === null) continue;
      const ok = (checks[def.type] || (() => true))(v);
      if (!ok) errs.push(`${key}: value ${JSON.stringify(v)} does not fit ECS type ${def.type}`);
      if (def.allowed_values && !def.allowed_values.some((a) => a.name === v)) errs.push(`${key}: ${JSON.stringify(v)} not in allowed values [${def.allowed_values.map((a) => a.name).join(', ')}]`);
    }
  }
  // category/type pairing per ECS expected_event_types
  const cats = [].concat(doc.event?.category ?? []), types = [].concat(doc.event?.type ?? []);
  for (const c of cats) {
    const a = EcsFlat['event.category'].allowed_values.find((x) => x.name === c);
    if (a && a.expected_event_types) for (const t of types) if (!a.expected_event_types.includes(t)) warns.push(`event.type ${t} is not an expected type for event.category ${c} (expected: ${a.expected_event_types.join(',')})`);
  }
  if (doc.ecs?.version && doc.ecs.version !== EcsVersion) warns.push(`ecs.version ${doc.ecs.version} differs from package ECS ${EcsVersion}`);
  return { errs, warns };
}

let buf = '';
process.stdin.on('data', (d) => (buf += d));
process.stdin.on('end', () => {
  let bad = 0, n = 0;
  for (const line of buf.split('\n')) {
    if (!line.trim()) continue;
    n++;
    let doc; try { doc = JSON.parse(line); } catch (e) { console.log(`doc ${n}: invalid JSON: ${e.message}`); bad++; continue; }
    if (doc.create || doc.index) { n--; continue; } // skip _bulk action lines
    const { errs, warns } = validate(doc);
    for (const w of warns) console.log(`doc ${n}: WARN ${w}`);
    for (const e of errs) console.log(`doc ${n}: ERROR ${e}`);
    if (errs.length) bad++;
  }
  console.log(`${n - bad} passed, ${bad} failed`);
  process.exit(bad ? 1 : 0);
});
