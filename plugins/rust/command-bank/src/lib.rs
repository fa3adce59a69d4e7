//! Example command handler: a bank account.
//!
//! Commands: `open {owner}`, `deposit {amount}`, `withdraw {amount}`, `close`.
//! Rejections: `bad-amount` (amount <= 0 or above the configured maximum),
//! `not-open`, `already-open`, `account-closed`, `insufficient-funds`
//! (no overdraft), `balance-not-zero` (closing a non-empty account).
//!
//! Config (optional): `{"max_amount": 1000000}`.

use serde::{Deserialize, Serialize};
use weir_guest::{CommandHandler, CommandMeta, Rejection};

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Command {
    Open { owner: String },
    Deposit { amount: i64 },
    Withdraw { amount: i64 },
    Close,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Event {
    Opened { owner: String },
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
    Closed,
}

#[derive(Serialize, Deserialize, Default)]
struct Account {
    open: bool,
    closed: bool,
    owner: String,
    balance: i64,
}

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    max_amount: Option<i64>,
}

struct Bank {
    max_amount: i64,
}

impl Bank {
    fn check_amount(&self, amount: i64) -> Result<(), Rejection> {
        if amount <= 0 {
            return Err(Rejection::new(
                "bad-amount",
                format!("amount must be positive, got {amount}"),
            ));
        }
        if amount > self.max_amount {
            return Err(Rejection::new(
                "bad-amount",
                format!("amount {amount} exceeds the limit of {}", self.max_amount),
            ));
        }
        Ok(())
    }
}

fn usable(account: &Account) -> Result<(), Rejection> {
    if !account.open {
        return Err(Rejection::new(
            "not-open",
            "the account has not been opened",
        ));
    }
    if account.closed {
        return Err(Rejection::new("account-closed", "the account is closed"));
    }
    Ok(())
}

impl CommandHandler for Bank {
    type Command = Command;
    type Event = Event;
    type State = Account;

    fn init(config: &str) -> Result<Self, String> {
        let config: Config = weir_guest::parse_config(config)?;
        Ok(Bank {
            max_amount: config.max_amount.unwrap_or(1_000_000_000),
        })
    }

    fn decide(
        &self,
        command: Command,
        account: &Account,
        _meta: &CommandMeta,
    ) -> Result<Vec<Event>, Rejection> {
        match command {
            Command::Open { owner } => {
                if account.open {
                    return Err(Rejection::new(
                        "already-open",
                        "the account is already open",
                    ));
                }
                if owner.trim().is_empty() {
                    return Err(Rejection::new("bad-owner", "an account needs an owner"));
                }
                Ok(vec![Event::Opened { owner }])
            }
            Command::Deposit { amount } => {
                usable(account)?;
                self.check_amount(amount)?;
                Ok(vec![Event::Deposited { amount }])
            }
            Command::Withdraw { amount } => {
                usable(account)?;
                self.check_amount(amount)?;
                if amount > account.balance {
                    return Err(Rejection::new(
                        "insufficient-funds",
                        format!(
                            "cannot withdraw {amount}: the balance is {}",
                            account.balance
                        ),
                    ));
                }
                Ok(vec![Event::Withdrawn { amount }])
            }
            Command::Close => {
                usable(account)?;
                if account.balance != 0 {
                    return Err(Rejection::new(
                        "balance-not-zero",
                        format!("withdraw the balance of {} before closing", account.balance),
                    ));
                }
                Ok(vec![Event::Closed])
            }
        }
    }

    fn evolve(account: &mut Account, event: &Event) {
        match event {
            Event::Opened { owner } => {
                account.open = true;
                account.owner = owner.clone();
            }
            Event::Deposited { amount } => account.balance += amount,
            Event::Withdrawn { amount } => account.balance -= amount,
            Event::Closed => account.closed = true,
        }
    }
}

weir_guest::command_handler!(Bank);
