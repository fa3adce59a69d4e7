// weir guest SDK for JavaScript: command handlers (world `command-handler`),
// the decider pattern.
//
//   import { commandHandler, Rejection } from '<path>/guest-sdk/js/command-handler.js';
//   export const service = commandHandler({
//     name: 'bank', version: '0.1.0',
//     init(config) { return settings },
//     initialState() { return {...} },
//     decide(command, state, settings) { return [{ name: 'deposited', data: {...} }] }, // or throw new Rejection(code, message)
//     evolve(state, event, settings) { return newState },
//   });
//
// State is JSON: stored as dumps(state), read back with loads.
import { log as hostLog } from 'weir:plugin/host@0.1.0';
import { commonExports, dumps, loads, messageOf, toBytes, toText } from './core.js';

export * from './core.js';

export function log(level, message) {
  hostLog(level, String(message));
}

/** Throw from `decide` to refuse a command with a stable code. */
export class Rejection extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const encoder = new TextEncoder();

function parseData(name, data) {
  const text = toText(toBytes(data));
  if (text.trim() === '') return null;
  try {
    return loads(text);
  } catch (e) {
    throw new Error(`\`${name}\`: ${messageOf(e)}`);
  }
}

/** The `service` export for a plugin object with `init`, `initialState`, `decide`, `evolve`. */
export function commandHandler(plugin) {
  const { slot, exports } = commonExports(plugin, 'command-handler');
  const reject = (code, message) => ({ code, message });
  const loadState = (bytes) => {
    const raw = toBytes(bytes);
    return raw.length === 0 ? plugin.initialState() : loads(raw);
  };
  return {
    ...exports,
    decide(command, stateBytes) {
      let settings, data, state;
      try {
        settings = slot.get();
      } catch (e) {
        throw reject('not-initialised', messageOf(e));
      }
      try {
        data = parseData(command.name, command.data);
      } catch (e) {
        throw reject('invalid-command', messageOf(e));
      }
      try {
        state = loadState(stateBytes);
      } catch (e) {
        throw reject('invalid-state', `aggregate state is not valid: ${messageOf(e)}`);
      }
      let events;
      try {
        events = plugin.decide(
          { id: command.id, aggregate: command.aggregate, name: command.name, data },
          state,
          settings,
        );
      } catch (e) {
        if (e instanceof Rejection) throw reject(e.code, e.message);
        throw reject('error', messageOf(e));
      }
      return events.map((e) => ({ name: e.name, data: encoder.encode(dumps(e.data === undefined ? null : e.data)) }));
    },
    evolve(stateBytes, events) {
      // No error channel: an unreadable state or event traps (the host
      // reports it and commits nothing).
      const settings = slot.get();
      let state = loadState(stateBytes);
      for (const event of events) {
        state = plugin.evolve(state, { name: event.name, data: parseData(event.name, event.data) }, settings);
      }
      return encoder.encode(dumps(state));
    },
  };
}
