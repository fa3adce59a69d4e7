// Example command handler (JavaScript): a bank account.
//
// Commands: open {owner}, deposit {amount}, withdraw {amount}, close.
// Rejections: bad-amount (amount <= 0 or above the configured maximum),
// not-open, already-open, account-closed, insufficient-funds (no
// overdraft), balance-not-zero (closing a non-empty account),
// invalid-command (unknown command or bad body).
//
// Same behaviour, events and state bytes as plugins/rust/command-bank;
// amounts and balances are BigInts (64-bit, wrapping like Rust).
// Config (optional): {"max_amount": 1000000}.
import { asI64, commandHandler, Rejection } from '../../../guest-sdk/js/command-handler.js';

const isObject = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);

// Rust's str::trim strips Unicode White_Space (JS trim() also strips U+FEFF
// and misses U+0085).
const RUST_WHITESPACE = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/;

function account(open = false, closed = false, owner = '', balance = 0n) {
  // Field order matters: the state bytes match the Rust plugin's.
  return { open, closed, owner, balance };
}

function readAccount(state) {
  const ok =
    isObject(state) &&
    typeof state.open === 'boolean' &&
    typeof state.closed === 'boolean' &&
    typeof state.owner === 'string' &&
    asI64(state.balance) !== undefined;
  if (!ok) throw new Error('aggregate state is not a valid account');
  return account(state.open, state.closed, state.owner, asI64(state.balance));
}

function field(name, data, key, read, what) {
  const value = isObject(data) && key in data ? read(data[key]) : undefined;
  if (value === undefined) throw new Error(`\`${name}\`: expected {"${key}": ${what}}`);
  return value;
}

const asString = (x) => (typeof x === 'string' ? x : undefined);

function parse(command) {
  const { name, data } = command;
  try {
    if (name === 'open') return [name, field(name, data, 'owner', asString, 'a string')];
    if (name === 'deposit' || name === 'withdraw') return [name, field(name, data, 'amount', asI64, 'an integer')];
    if (name === 'close') {
      if (data !== null) throw new Error('`close`: expected no body');
      return [name, null];
    }
  } catch (e) {
    throw new Rejection('invalid-command', e.message);
  }
  throw new Rejection('invalid-command', `\`${name}\`: unknown command`);
}

function usable(acct) {
  if (!acct.open) throw new Rejection('not-open', 'the account has not been opened');
  if (acct.closed) throw new Rejection('account-closed', 'the account is closed');
}

export const service = commandHandler({
  name: 'command_bank',
  version: '0.1.0',
  init(config) {
    const limit = config.max_amount;
    if (limit !== undefined && limit !== null && asI64(limit) === undefined) {
      throw new Error('invalid config: max_amount must be an integer');
    }
    return { maxAmount: limit === undefined || limit === null ? 1000000000n : asI64(limit) };
  },
  initialState() {
    return account();
  },
  decide(command, state, settings) {
    const [name, arg] = parse(command);
    const acct = readAccount(state);
    const checkAmount = (amount) => {
      if (amount <= 0n) throw new Rejection('bad-amount', `amount must be positive, got ${amount}`);
      if (amount > settings.maxAmount) {
        throw new Rejection('bad-amount', `amount ${amount} exceeds the limit of ${settings.maxAmount}`);
      }
    };
    if (name === 'open') {
      if (acct.open) throw new Rejection('already-open', 'the account is already open');
      if (RUST_WHITESPACE.test(arg)) throw new Rejection('bad-owner', 'an account needs an owner');
      return [{ name: 'opened', data: { owner: arg } }];
    }
    usable(acct);
    if (name === 'deposit') {
      checkAmount(arg);
      return [{ name: 'deposited', data: { amount: arg } }];
    }
    if (name === 'withdraw') {
      checkAmount(arg);
      if (arg > acct.balance) {
        throw new Rejection('insufficient-funds', `cannot withdraw ${arg}: the balance is ${acct.balance}`);
      }
      return [{ name: 'withdrawn', data: { amount: arg } }];
    }
    if (acct.balance !== 0n) {
      throw new Rejection('balance-not-zero', `withdraw the balance of ${acct.balance} before closing`);
    }
    return [{ name: 'closed', data: null }];
  },
  evolve(state, event) {
    const acct = readAccount(state);
    const { name, data } = event;
    if (name === 'opened') {
      acct.open = true;
      acct.owner = field(name, data, 'owner', asString, 'a string');
    } else if (name === 'deposited') {
      acct.balance = BigInt.asIntN(64, acct.balance + field(name, data, 'amount', asI64, 'an integer'));
    } else if (name === 'withdrawn') {
      acct.balance = BigInt.asIntN(64, acct.balance - field(name, data, 'amount', asI64, 'an integer'));
    } else if (name === 'closed' && data === null) {
      acct.closed = true;
    } else {
      throw new Error(`cannot read event \`${name}\``);
    }
    return acct;
  },
});
