//! Property tests: random command sequences on one entity never panic and
//! keep the `execute` contract (unchanged ⇒ identical state; changed ⇒
//! version + 1, written keys carry it, no expired keys left, codec round
//! trip) and agree with a tiny model on what GET sees.

use std::collections::BTreeMap;

use bytes::Bytes;
use node::exec::{access, execute, Access};
use node::kv::KvState;
use proptest::prelude::*;
use resp::{parse_command, Command, Reply};

const T0: i64 = 1_700_000_000_000;

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("k".to_string()),
        Just("j".to_string()),
        Just("{t}x".to_string()),
        Just("0".to_string()),
        Just("1".to_string()),
        Just("-1".to_string()),
        Just("10".to_string()),
        Just("2.5".to_string()),
        Just("abc".to_string()),
        Just("".to_string()),
        Just("9223372036854775807".to_string()),
        Just("NX".to_string()),
        Just("XX".to_string()),
        Just("GT".to_string()),
        Just("LT".to_string()),
        Just("GET".to_string()),
        Just("EX".to_string()),
        Just("PX".to_string()),
        Just("EXAT".to_string()),
        Just("PXAT".to_string()),
        Just("KEEPTTL".to_string()),
        Just("PERSIST".to_string()),
        Just("1700000000005".to_string()),
    ]
}

const NAMES: &[&str] = &[
    "GET",
    "SET",
    "SETNX",
    "SETEX",
    "PSETEX",
    "GETSET",
    "GETDEL",
    "GETEX",
    "MGET",
    "MSET",
    "MSETNX",
    "DEL",
    "UNLINK",
    "EXISTS",
    "INCR",
    "DECR",
    "INCRBY",
    "DECRBY",
    "INCRBYFLOAT",
    "APPEND",
    "STRLEN",
    "GETRANGE",
    "SETRANGE",
    "TYPE",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "TTL",
    "PTTL",
    "PERSIST",
    "VGET",
    "VSET",
];

fn command() -> impl Strategy<Value = Option<Command>> {
    (0..NAMES.len(), proptest::collection::vec(word(), 1..6)).prop_map(|(n, words)| {
        let mut args = vec![Bytes::from_static(NAMES[n].as_bytes())];
        args.extend(words.into_iter().map(Bytes::from));
        parse_command(&args).ok()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_sequences_keep_the_contract(
        steps in proptest::collection::vec((command(), 0i64..20), 1..40)
    ) {
        let mut state = KvState::default();
        let mut now = T0;
        for (cmd, dt) in steps {
            now += dt;
            let Some(cmd) = cmd else { continue };
            let before = state.clone();
            let (reply, changed) = execute(&mut state, &cmd, now);
            if changed {
                prop_assert_eq!(access(&cmd), Access::Write);
                prop_assert_eq!(state.version, before.version + 1);
                for (k, e) in &state.keys {
                    prop_assert!(e.is_live(now));
                    if before.keys.get(k) != Some(e) {
                        prop_assert_eq!(e.version, state.version);
                    }
                }
            } else {
                prop_assert_eq!(&state, &before);
            }
            if let Reply::Error(e) = &reply {
                prop_assert!(!changed, "error {} changed state", e);
            }
            let dec = KvState::decode(&state.encode());
            prop_assert_eq!(dec.as_ref(), Ok(&state));
            // Reads agree with the state's live view.
            let mut model = BTreeMap::new();
            for (k, e) in &state.keys {
                if e.is_live(now) {
                    model.insert(k.clone(), e.value.clone());
                }
            }
            for k in ["k", "j", "{t}x"] {
                let (r, ch) = execute(&mut state, &Command::Get(Bytes::from_static(k.as_bytes())), now);
                prop_assert!(!ch);
                let want = model.get(k.as_bytes()).cloned().map_or(Reply::Null, Reply::Bulk);
                prop_assert_eq!(r, want);
            }
        }
    }
}
