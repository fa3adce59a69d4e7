// weir guest SDK for JavaScript: enrichers (world `enricher`).
//
//   import { enricher, lookupJson } from '<path>/guest-sdk/js/enricher.js';
//   export const river = enricher({
//     name: 'my-enricher', version: '0.1.0',
//     init(config) { return state },            // config: parsed JSON object
//     process(event, out, state) { out.emitJson(0, key, value); },
//   });
import { log as hostLog } from 'weir:plugin/host@0.1.0';
import { lookup as hostLookup } from 'weir:plugin/lookup@0.1.0';
import { Emitter, Event, commonExports, failure, loads, toBytes } from './core.js';

export * from './core.js';

/** Log through the host: log('info', 'message'). */
export function log(level, message) {
  hostLog(level, String(message));
}

/** The committed value under `key` in pond `pond` (Uint8Array), or undefined. */
export function lookup(pond, key) {
  const value = hostLookup(pond, toBytes(key));
  return value === null ? undefined : value;
}

/** `lookup` parsed as JSON with sorted keys (like a Rust serde_json::Value);
 * a value that does not parse reads as null. */
export function lookupJson(pond, key) {
  const raw = lookup(pond, key);
  if (raw === undefined) return null;
  try {
    return loads(raw, true);
  } catch {
    return null;
  }
}

/** The `river` export for a plugin object with `init` and `process`. */
export function enricher(plugin) {
  const { slot, exports } = commonExports(plugin, 'enricher');
  return {
    ...exports,
    process(batch) {
      const settings = slot.forBatch();
      const out = new Emitter();
      const n = batch.offsets.length;
      for (let i = 0; i < n; i++) {
        out.source = i;
        try {
          plugin.process(new Event(batch, i), out, settings);
        } catch (e) {
          throw failure(e, i);
        }
      }
      return out.intoEmitted();
    },
  };
}
