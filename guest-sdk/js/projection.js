// weir guest SDK for JavaScript: projections (world `projection`).
//
//   import { projection } from '<path>/guest-sdk/js/projection.js';
//   export const pond = projection({
//     name: 'my-pond', version: '0.1.0',
//     init(config) { return state },
//     apply(event, st, state) { st.putJson(key, value); },
//     query(request, st, state) { return 'answer' },   // optional
//   });
import { log as hostLog } from 'weir:plugin/host@0.1.0';
import * as hostState from 'weir:plugin/state@0.1.0';
import { Event, commonExports, dumps, failure, loads, messageOf, toBytes, toText } from './core.js';

export * from './core.js';

export function log(level, message) {
  hostLog(level, String(message));
}

/** A projection's handle on its pond's key-value state. Keys and values are
 * strings (UTF-8) or Uint8Arrays; writes commit with the batch. */
export class State {
  get(key) {
    const value = hostState.get(toBytes(key));
    return value === null ? undefined : value;
  }
  /** The value under `key` parsed as JSON, or undefined; throws if invalid. */
  getJson(key) {
    const raw = this.get(key);
    if (raw === undefined) return undefined;
    try {
      return loads(raw);
    } catch (e) {
      const shown = typeof key === 'string' ? key : toText(key, true);
      throw new Error(`state value under ${JSON.stringify(shown)} is not valid JSON: ${messageOf(e)}`);
    }
  }
  put(key, value) {
    hostState.put(toBytes(key), toBytes(value));
  }
  putJson(key, value) {
    this.put(key, dumps(value));
  }
  delete(key) {
    hostState.delete(toBytes(key));
  }
  /** Up to `limit` [key, value] pairs under `prefix` in key order, strictly
   * after `startAfter` when given. */
  scan(prefix = '', startAfter = undefined, limit = 256) {
    return hostState.scan(toBytes(prefix), startAfter === undefined ? undefined : toBytes(startAfter), limit);
  }
  /** Every entry under `prefix`, fetched page by page. */
  scanAll(prefix = '') {
    const page = 256;
    const all = [];
    for (;;) {
      const after = all.length ? all[all.length - 1][0] : undefined;
      const got = this.scan(prefix, after, page);
      all.push(...got);
      if (got.length < page) return all;
    }
  }
}

/** The `pond` export for a plugin object with `init`, `apply` and optionally `query`. */
export function projection(plugin) {
  const { slot, exports } = commonExports(plugin, 'projection');
  const state = new State();
  return {
    ...exports,
    apply(batch) {
      const settings = slot.forBatch();
      const n = batch.offsets.length;
      for (let i = 0; i < n; i++) {
        try {
          plugin.apply(new Event(batch, i), state, settings);
        } catch (e) {
          throw failure(e, i);
        }
      }
    },
    query(request) {
      try {
        if (!plugin.query) throw new Error('this projection has no custom queries');
        return toBytes(plugin.query(toBytes(request), state, slot.get()));
      } catch (e) {
        throw messageOf(e);
      }
    },
  };
}
