//! The demo backend's SQLite state: orders, clinic slots, appointments, and a journal of every tool call.
//!
//! State lives in one file so it survives restarts (a restarted backend must still know a booking made before), and
//! so tests can read the call journal from outside the server process to check what reached the backend.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database lock was poisoned by a panic")]
    Poisoned,
}

/// One order of the fictional shop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub order_id: String,
    pub customer: String,
    pub status: String,
    pub eta: Option<String>,
    pub items: String,
}

/// One bookable slot of the fictional clinic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub slot_id: String,
    pub date: String,
    pub time: String,
    pub clinician: String,
}

/// A booked appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Appointment {
    pub appointment_id: String,
    pub slot_id: String,
    pub patient_name: String,
    pub date: String,
    pub time: String,
    pub clinician: String,
    pub status: String,
}

/// One row of the call journal: what a tool call carried and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalEntry {
    pub id: i64,
    pub tool: String,
    pub arguments: Value,
    /// The request's `_meta` as the backend received it.
    pub meta: Value,
    /// Milliseconds since the Unix epoch when the call arrived.
    pub started_at_ms: i64,
    /// Milliseconds since the Unix epoch when the call ended; `None` while running (or if the process died).
    pub finished_at_ms: Option<i64>,
    /// `ok`, `error` or `cancelled`; `None` while running.
    pub outcome: Option<String>,
    /// The `traceparent` HTTP header of the request, when it came over Streamable HTTP with one.
    pub http_traceparent: Option<String>,
}

/// Outcome of a cancellation or booking attempt that can fail for business reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<T> {
    Done(T),
    /// The request was understood but cannot be carried out; the text says why, for the caller.
    Refused(String),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders(
    order_id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    status TEXT NOT NULL,
    eta TEXT,
    items TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slots(
    slot_id TEXT PRIMARY KEY,
    date TEXT NOT NULL,
    time TEXT NOT NULL,
    clinician TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS appointments(
    appointment_id TEXT PRIMARY KEY,
    slot_id TEXT NOT NULL REFERENCES slots(slot_id),
    patient_name TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS calls(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    meta_json TEXT NOT NULL,
    at INTEGER NOT NULL,
    finished_at INTEGER,
    outcome TEXT,
    http_traceparent TEXT
);
CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// Seed data, written once on first start. Slot dates are relative to the seeding day so the demo always has
/// upcoming slots.
const SEED: &str = "
INSERT INTO orders VALUES ('123', 'Ada Lovelace', 'delivered', NULL, '1 pair of running shoes');
INSERT INTO orders VALUES ('456', 'Grace Hopper', 'shipped', 'Friday', '2 coffee mugs, 1 teapot');
INSERT INTO orders VALUES ('789', 'Alan Turing', 'processing', 'next Wednesday', '1 desk lamp');
INSERT INTO orders VALUES ('1011', 'Katherine Johnson', 'processing', 'next Thursday', '3 notebooks');
INSERT INTO slots VALUES ('S-101', date('now', '+1 day'), '09:00', 'Dr. Patel');
INSERT INTO slots VALUES ('S-102', date('now', '+1 day'), '10:30', 'Dr. Patel');
INSERT INTO slots VALUES ('S-103', date('now', '+1 day'), '14:00', 'Dr. Okafor');
INSERT INTO slots VALUES ('S-201', date('now', '+2 days'), '09:30', 'Dr. Okafor');
INSERT INTO slots VALUES ('S-202', date('now', '+2 days'), '11:00', 'Dr. Patel');
INSERT INTO slots VALUES ('S-301', date('now', '+3 days'), '16:00', 'Dr. Okafor');
INSERT INTO settings VALUES ('seeded', '1');
";

/// The SQLite database behind the demo backend.
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating and seeding on first use) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = open_connection(path)?;
        conn.execute_batch(SCHEMA)?;
        let seeded: Option<String> =
            conn.query_row("SELECT value FROM settings WHERE key = 'seeded'", [], |row| row.get(0)).optional()?;
        if seeded.is_none() {
            conn.execute_batch(&format!("BEGIN; {SEED} COMMIT;"))?;
        }
        Ok(Store { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>) -> Result<T, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(f(&conn)?)
    }

    /// Looks one order up.
    pub fn order(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT order_id, customer, status, eta, items FROM orders WHERE order_id = ?1",
                [order_id],
                |r| {
                    Ok(Order {
                        order_id: r.get(0)?,
                        customer: r.get(1)?,
                        status: r.get(2)?,
                        eta: r.get(3)?,
                        items: r.get(4)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Sets an order's status and expected delivery, as the shop's order system would (a courier's update); false
    /// when there is no such order.
    pub fn update_order(&self, order_id: &str, status: &str, eta: Option<&str>) -> Result<bool, StoreError> {
        let changed = self.with(|c| {
            c.execute(
                "UPDATE orders SET status = ?2, eta = ?3 WHERE order_id = ?1",
                rusqlite::params![order_id, status, eta],
            )
        })?;
        Ok(changed > 0)
    }

    /// Cancels an order that has not shipped yet.
    pub fn cancel_order(&self, order_id: &str) -> Result<Option<Change<Order>>, StoreError> {
        let Some(order) = self.order(order_id)? else { return Ok(None) };
        let refused = match order.status.as_str() {
            "processing" => None,
            "cancelled" => Some(format!("Order {order_id} is already cancelled.")),
            status => Some(format!("Order {order_id} is {status} and can no longer be cancelled.")),
        };
        if let Some(reason) = refused {
            return Ok(Some(Change::Refused(reason)));
        }
        self.with(|c| c.execute("UPDATE orders SET status = 'cancelled', eta = NULL WHERE order_id = ?1", [order_id]))?;
        Ok(self.order(order_id)?.map(Change::Done))
    }

    /// Open (unbooked) slots, optionally on one date (`YYYY-MM-DD`), earliest first.
    pub fn open_slots(&self, date: Option<&str>) -> Result<Vec<Slot>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT s.slot_id, s.date, s.time, s.clinician FROM slots s
                 WHERE (?1 IS NULL OR s.date = ?1)
                   AND NOT EXISTS (SELECT 1 FROM appointments a WHERE a.slot_id = s.slot_id AND a.status = 'booked')
                 ORDER BY s.date, s.time",
            )?;
            let rows = stmt.query_map([date], |r| {
                Ok(Slot { slot_id: r.get(0)?, date: r.get(1)?, time: r.get(2)?, clinician: r.get(3)? })
            })?;
            rows.collect()
        })
    }

    /// Books an open slot for a patient.
    pub fn book(&self, slot_id: &str, patient_name: &str) -> Result<Change<Appointment>, StoreError> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = conn.transaction()?;
        let exists: Option<String> =
            tx.query_row("SELECT slot_id FROM slots WHERE slot_id = ?1", [slot_id], |r| r.get(0)).optional()?;
        if exists.is_none() {
            return Ok(Change::Refused(format!("There is no slot {slot_id}.")));
        }
        let taken: Option<String> = tx
            .query_row(
                "SELECT appointment_id FROM appointments WHERE slot_id = ?1 AND status = 'booked'",
                [slot_id],
                |r| r.get(0),
            )
            .optional()?;
        if taken.is_some() {
            return Ok(Change::Refused(format!("Slot {slot_id} is already booked.")));
        }
        let next: i64 = tx.query_row("SELECT COUNT(*) FROM appointments", [], |r| r.get(0))?;
        let appointment_id = format!("A-{}", 1001 + next);
        tx.execute(
            "INSERT INTO appointments VALUES (?1, ?2, ?3, 'booked')",
            params![appointment_id, slot_id, patient_name],
        )?;
        tx.commit()?;
        drop(conn);
        match self.appointment(&appointment_id)? {
            Some(appointment) => Ok(Change::Done(appointment)),
            None => Ok(Change::Refused(format!("Booking {appointment_id} could not be read back."))),
        }
    }

    /// Reads one appointment.
    pub fn appointment(&self, appointment_id: &str) -> Result<Option<Appointment>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT a.appointment_id, a.slot_id, a.patient_name, s.date, s.time, s.clinician, a.status
                 FROM appointments a JOIN slots s ON s.slot_id = a.slot_id WHERE a.appointment_id = ?1",
                [appointment_id],
                |r| {
                    Ok(Appointment {
                        appointment_id: r.get(0)?,
                        slot_id: r.get(1)?,
                        patient_name: r.get(2)?,
                        date: r.get(3)?,
                        time: r.get(4)?,
                        clinician: r.get(5)?,
                        status: r.get(6)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Cancels a booked appointment, freeing its slot.
    pub fn cancel_appointment(&self, appointment_id: &str) -> Result<Option<Change<Appointment>>, StoreError> {
        let Some(appointment) = self.appointment(appointment_id)? else { return Ok(None) };
        if appointment.status != "booked" {
            return Ok(Some(Change::Refused(format!("Appointment {appointment_id} is already cancelled."))));
        }
        self.with(|c| {
            c.execute("UPDATE appointments SET status = 'cancelled' WHERE appointment_id = ?1", [appointment_id])
        })?;
        Ok(self.appointment(appointment_id)?.map(Change::Done))
    }

    /// Records the start of a tool call; returns the journal row id.
    pub fn journal_start(
        &self,
        tool: &str,
        arguments: &Value,
        meta: &Value,
        http_traceparent: Option<&str>,
    ) -> Result<i64, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO calls(tool, arguments, meta_json, at, http_traceparent) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![tool, arguments.to_string(), meta.to_string(), now_ms(), http_traceparent],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Records how a tool call ended.
    pub fn journal_finish(&self, id: i64, outcome: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("UPDATE calls SET finished_at = ?1, outcome = ?2 WHERE id = ?3", params![now_ms(), outcome, id])
        })?;
        Ok(())
    }
}

/// Reads the whole call journal of the database at `path`, oldest first. Tests use it to check what reached the
/// backend (arguments, `_meta`, cancellation, overlap of concurrent calls).
pub fn read_journal(path: &Path) -> Result<Vec<JournalEntry>, StoreError> {
    let conn = open_connection(path)?;
    conn.execute_batch(SCHEMA)?;
    let mut stmt = conn.prepare(
        "SELECT id, tool, arguments, meta_json, at, finished_at, outcome, http_traceparent FROM calls ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        let arguments: String = r.get(2)?;
        let meta: String = r.get(3)?;
        Ok(JournalEntry {
            id: r.get(0)?,
            tool: r.get(1)?,
            arguments: serde_json::from_str(&arguments).unwrap_or(Value::String(arguments)),
            meta: serde_json::from_str(&meta).unwrap_or(Value::String(meta)),
            started_at_ms: r.get(4)?,
            finished_at_ms: r.get(5)?,
            outcome: r.get(6)?,
            http_traceparent: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    // Tests read the journal while the server writes; WAL plus a busy timeout lets both proceed.
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    Ok(conn)
}

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("demo.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn seeds_orders_once_and_keeps_state_across_reopen() {
        let (dir, store) = store();
        assert_eq!(store.order("456").unwrap().unwrap().eta.as_deref(), Some("Friday"));
        assert_eq!(store.cancel_order("789").unwrap(), Some(Change::Done(store.order("789").unwrap().unwrap())));
        drop(store);
        let reopened = Store::open(&dir.path().join("demo.db")).unwrap();
        assert_eq!(reopened.order("789").unwrap().unwrap().status, "cancelled");
        assert_eq!(reopened.open_slots(None).unwrap().len(), 6);
    }

    #[test]
    fn an_order_update_is_what_the_next_lookup_sees() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("shop.db")).unwrap();
        assert!(store.update_order("456", "delayed", Some("next Wednesday")).unwrap());
        let order = store.order("456").unwrap().unwrap();
        assert_eq!((order.status.as_str(), order.eta.as_deref()), ("delayed", Some("next Wednesday")));
        assert!(!store.update_order("999", "shipped", None).unwrap());
    }

    #[test]
    fn shipped_orders_cannot_be_cancelled() {
        let (_dir, store) = store();
        assert!(matches!(store.cancel_order("456").unwrap(), Some(Change::Refused(_))));
        assert_eq!(store.cancel_order("nope").unwrap(), None);
    }

    #[test]
    fn booking_takes_a_slot_and_cancelling_frees_it() {
        let (_dir, store) = store();
        let Change::Done(appointment) = store.book("S-101", "Ada").unwrap() else { panic!("not booked") };
        assert!(!store.open_slots(None).unwrap().iter().any(|s| s.slot_id == "S-101"));
        assert!(matches!(store.book("S-101", "Bob").unwrap(), Change::Refused(_)));
        assert!(matches!(store.cancel_appointment(&appointment.appointment_id).unwrap(), Some(Change::Done(_))));
        assert!(store.open_slots(None).unwrap().iter().any(|s| s.slot_id == "S-101"));
    }

    #[test]
    fn journal_round_trips() {
        let (dir, store) = store();
        let id = store
            .journal_start("lookup_order", &serde_json::json!({"order_id": "1"}), &serde_json::json!({}), None)
            .unwrap();
        store.journal_finish(id, "ok").unwrap();
        let journal = read_journal(&dir.path().join("demo.db")).unwrap();
        assert_eq!(journal.len(), 1);
        assert_eq!(journal[0].outcome.as_deref(), Some("ok"));
        assert_eq!(journal[0].arguments["order_id"], "1");
    }
}
