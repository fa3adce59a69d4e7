"""Example command handler (Python): a bank account.

Commands: ``open {owner}``, ``deposit {amount}``, ``withdraw {amount}``,
``close``. Rejections: ``bad-amount`` (amount <= 0 or above the configured
maximum), ``not-open``, ``already-open``, ``account-closed``,
``insufficient-funds`` (no overdraft), ``balance-not-zero`` (closing a
non-empty account), ``invalid-command`` (unknown command or bad body).

Same behaviour, events and state bytes as plugins/rust/command-bank.
Config (optional): ``{"max_amount": 1000000}``.
"""

import weir
from weir import NewEvent, Rejection

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


def wrap_i64(n):
    return ((n - I64_MIN) & ((1 << 64) - 1)) + I64_MIN


def is_i64(value):
    return type(value) is int and I64_MIN <= value <= I64_MAX


def field(name, data, key, check, what):
    if not isinstance(data, dict) or key not in data or not check(data[key]):
        raise ValueError(f"`{name}`: expected {{\"{key}\": {what}}}")
    return data[key]


def account(open=False, closed=False, owner="", balance=0):
    # Field order matters: the state bytes match the Rust plugin's.
    return {"open": open, "closed": closed, "owner": owner, "balance": balance}


def read_account(state):
    if state is None:
        return account()
    ok = (
        isinstance(state, dict)
        and type(state.get("open")) is bool
        and type(state.get("closed")) is bool
        and isinstance(state.get("owner"), str)
        and is_i64(state.get("balance"))
    )
    if not ok:
        raise ValueError("aggregate state is not a valid account")
    return account(state["open"], state["closed"], state["owner"], state["balance"])


def usable(acct):
    if not acct["open"]:
        raise Rejection("not-open", "the account has not been opened")
    if acct["closed"]:
        raise Rejection("account-closed", "the account is closed")


# Rust's str::trim strips Unicode White_Space, which is narrower than what
# Python's str.strip() strips (that also takes \x1c-\x1f).
RUST_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace() and c not in "\x1c\x1d\x1e\x1f")


def rust_trim(text):
    return text.strip(RUST_WHITESPACE)


class Bank(weir.CommandHandler):
    name = "command_bank"
    version = "0.1.0"

    def __init__(self, config):
        limit = config.get("max_amount")
        if limit is not None and not is_i64(limit):
            raise ValueError("invalid config: max_amount must be an integer")
        self.max_amount = 1_000_000_000 if limit is None else limit

    def initial_state(self):
        return account()

    def check_amount(self, amount):
        if amount <= 0:
            raise Rejection("bad-amount", f"amount must be positive, got {amount}")
        if amount > self.max_amount:
            raise Rejection("bad-amount", f"amount {amount} exceeds the limit of {self.max_amount}")

    def parse(self, command):
        """(name, argument) of a well-formed command, else Rejection."""
        name, data = command.name, command.data
        try:
            if name == "open":
                return name, field(name, data, "owner", lambda v: isinstance(v, str), "a string")
            if name in ("deposit", "withdraw"):
                return name, field(name, data, "amount", is_i64, "an integer")
            if name == "close":
                if data is not None:
                    raise ValueError("`close`: expected no body")
                return name, None
        except ValueError as e:
            raise Rejection("invalid-command", str(e)) from None
        raise Rejection("invalid-command", f"`{name}`: unknown command")

    def decide(self, command, state):
        name, arg = self.parse(command)
        acct = read_account(state)
        if name == "open":
            if acct["open"]:
                raise Rejection("already-open", "the account is already open")
            if not rust_trim(arg):
                raise Rejection("bad-owner", "an account needs an owner")
            return [NewEvent("opened", {"owner": arg})]
        usable(acct)
        if name == "deposit":
            self.check_amount(arg)
            return [NewEvent("deposited", {"amount": arg})]
        if name == "withdraw":
            self.check_amount(arg)
            if arg > acct["balance"]:
                raise Rejection("insufficient-funds", f"cannot withdraw {arg}: the balance is {acct['balance']}")
            return [NewEvent("withdrawn", {"amount": arg})]
        if acct["balance"] != 0:
            raise Rejection("balance-not-zero", f"withdraw the balance of {acct['balance']} before closing")
        return [NewEvent("closed")]

    def evolve(self, state, event):
        acct = read_account(state)
        name, data = event.name, event.data
        if name == "opened":
            acct["open"] = True
            acct["owner"] = field(name, data, "owner", lambda v: isinstance(v, str), "a string")
        elif name == "deposited":
            acct["balance"] = wrap_i64(acct["balance"] + field(name, data, "amount", is_i64, "an integer"))
        elif name == "withdrawn":
            acct["balance"] = wrap_i64(acct["balance"] - field(name, data, "amount", is_i64, "an integer"))
        elif name == "closed" and data is None:
            acct["closed"] = True
        else:
            raise ValueError(f"cannot read event `{name}`")
        return acct


Service = weir.service(Bank)
