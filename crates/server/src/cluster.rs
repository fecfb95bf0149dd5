//! `CLUSTER` for cluster-aware Redis clients (redis-py's `RedisCluster` is tested;
//! others read the same replies). Every member holds every entity, so there is no
//! sharding to describe; what a client learns here is each hash slot's *home*
//! (`node::route::home`), the member that proposes its writes on the fast path. A
//! client routing by these answers sends each write where it needs no forward (with
//! 64 clients on 2 cores, 13 % less server CPU per write: BENCHMARKS.md). A write
//! sent elsewhere is still served (forwarded), so no `MOVED` is ever returned.
//!
//! The answers need every member's client address (`[[members]] client`); without
//! them `SLOTS`, `SHARDS` and `NODES` answer an error naming the setting.

use bytes::Bytes;
use resp::command::ClusterCommand;
use resp::Reply;

use crate::config::MemberConfig;
use crate::runtime::Shared;

/// What the answers need to know of the cluster, gathered from [`Shared`] so the
/// formatting is testable without a runtime.
pub struct View<'a> {
    pub me: u8,
    pub cluster_id: u64,
    pub members: &'a [MemberConfig],
    /// Whether each member (by position in `members`) is reachable (self: true).
    pub up: Vec<bool>,
    pub majority_reachable: bool,
}

/// Answers one `CLUSTER` subcommand.
pub fn cluster_cmd(shared: &Shared, c: ClusterCommand) -> Reply {
    let cfg = &shared.cfg;
    let view = View {
        me: cfg.id,
        cluster_id: cfg.cluster_id,
        members: &cfg.members,
        up: cfg
            .members
            .iter()
            .map(|m| m.id == cfg.id || shared.transport.live_channels(m.id) > 0)
            .collect(),
        majority_reachable: shared.majority_reachable(),
    };
    answer(&view, c)
}

/// The 40-hex-digit node name Redis clients expect, stable for a member of a cluster.
pub fn node_name(cluster_id: u64, member: u8) -> String {
    format!("{cluster_id:024x}{member:016x}")
}

/// One member as the answers show it: (member, its name, host, port, first and last
/// slot).
struct Shown<'a> {
    index: usize,
    id: u8,
    name: String,
    host: &'a str,
    port: u16,
    slots: (u16, u16),
}

fn shown<'a>(view: &View<'a>) -> Result<Vec<Shown<'a>>, Reply> {
    let n = view.members.len() as u8;
    let mut out = Vec::with_capacity(view.members.len());
    for (index, m) in view.members.iter().enumerate() {
        let Some((host, port)) = m.client.as_deref().and_then(crate::config::split_endpoint) else {
            return Err(Reply::error(format!(
                "ERR member {} has no client address: set `client = \"host:port\"` in every \
                 [[members]] entry of the configuration to enable CLUSTER SLOTS, SHARDS and NODES",
                m.id
            )));
        };
        let Some(slots) = node::route::slot_range(m.id, n) else {
            continue;
        };
        out.push(Shown {
            index,
            id: m.id,
            name: node_name(view.cluster_id, m.id),
            host,
            port,
            slots,
        });
    }
    out.sort_by_key(|s| s.slots.0);
    Ok(out)
}

fn bulk(s: impl Into<String>) -> Reply {
    Reply::Bulk(Bytes::from(s.into()))
}

/// The answer to `c` for `view`.
pub fn answer(view: &View<'_>, c: ClusterCommand) -> Reply {
    match c {
        ClusterCommand::KeySlot(key) => Reply::Integer(i64::from(resp::key_slot(&key))),
        ClusterCommand::MyId => bulk(node_name(view.cluster_id, view.me)),
        ClusterCommand::Info => {
            let n = view.members.len();
            let state = if view.majority_reachable {
                "ok"
            } else {
                "fail"
            };
            let me_epoch = u64::from(view.me) + 1;
            bulk(format!(
                "cluster_state:{state}\r\ncluster_slots_assigned:16384\r\n\
                 cluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n\
                 cluster_known_nodes:{n}\r\ncluster_size:{n}\r\ncluster_current_epoch:{n}\r\n\
                 cluster_my_epoch:{me_epoch}\r\n"
            ))
        }
        ClusterCommand::Slots => match shown(view) {
            Ok(members) => Reply::Array(
                members
                    .into_iter()
                    .map(|s| {
                        Reply::Array(vec![
                            Reply::Integer(i64::from(s.slots.0)),
                            Reply::Integer(i64::from(s.slots.1)),
                            Reply::Array(vec![
                                bulk(s.host),
                                Reply::Integer(i64::from(s.port)),
                                bulk(s.name),
                            ]),
                        ])
                    })
                    .collect(),
            ),
            Err(e) => e,
        },
        ClusterCommand::Shards => match shown(view) {
            Ok(members) => Reply::Array(
                members
                    .into_iter()
                    .map(|s| {
                        let health = if view.up[s.index] { "online" } else { "fail" };
                        let node = Reply::Map(vec![
                            (bulk("id"), bulk(s.name)),
                            (bulk("port"), Reply::Integer(i64::from(s.port))),
                            (bulk("ip"), bulk(s.host)),
                            (bulk("endpoint"), bulk(s.host)),
                            (bulk("role"), bulk("master")),
                            (bulk("replication-offset"), Reply::Integer(0)),
                            (bulk("health"), bulk(health)),
                        ]);
                        Reply::Map(vec![
                            (
                                bulk("slots"),
                                Reply::Array(vec![
                                    Reply::Integer(i64::from(s.slots.0)),
                                    Reply::Integer(i64::from(s.slots.1)),
                                ]),
                            ),
                            (bulk("nodes"), Reply::Array(vec![node])),
                        ])
                    })
                    .collect(),
            ),
            Err(e) => e,
        },
        ClusterCommand::Nodes => match shown(view) {
            Ok(members) => {
                let mut text = String::new();
                for s in members {
                    let peer_port = view.members[s.index]
                        .peer
                        .rsplit_once(':')
                        .map_or("0", |(_, p)| p);
                    let mut flags = String::new();
                    if s.id == view.me {
                        flags.push_str("myself,");
                    }
                    flags.push_str("master");
                    if !view.up[s.index] {
                        flags.push_str(",fail");
                    }
                    let link = if view.up[s.index] {
                        "connected"
                    } else {
                        "disconnected"
                    };
                    text.push_str(&format!(
                        "{} {}:{}@{peer_port} {flags} - 0 0 {} {link} {}-{}\n",
                        s.name,
                        s.host,
                        s.port,
                        u64::from(s.id) + 1,
                        s.slots.0,
                        s.slots.1
                    ));
                }
                bulk(text)
            }
            Err(e) => e,
        },
        ClusterCommand::Help => crate::client::help(&[
            "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "SLOTS",
            "    Each hash slot range and the member that is home to its entities.",
            "SHARDS",
            "    The same, in Redis 7's form.",
            "NODES",
            "    The members, one line each, in Redis's format.",
            "KEYSLOT <key>",
            "    The hash slot of <key>.",
            "INFO",
            "    The cluster's state.",
            "MYID",
            "    This member's name.",
            "HELP",
            "    Print this help.",
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(with_client: bool) -> Vec<MemberConfig> {
        (0..3)
            .map(|i| MemberConfig {
                id: i,
                peer: format!("127.0.0.1:{}", 17000 + u16::from(i)),
                client: with_client.then(|| format!("10.0.0.{}:{}", i + 1, 7000 + u16::from(i))),
            })
            .collect()
    }

    fn view(m: &[MemberConfig]) -> View<'_> {
        View {
            me: 1,
            cluster_id: 0xabc,
            members: m,
            up: vec![true, true, false],
            majority_reachable: true,
        }
    }

    fn int(r: &Reply) -> i64 {
        match r {
            Reply::Integer(i) => *i,
            other => panic!("not an integer: {other:?}"),
        }
    }

    #[test]
    fn slots_name_each_range_home_and_every_key_lands_on_its_home() {
        let m = members(true);
        let Reply::Array(ranges) = answer(&view(&m), ClusterCommand::Slots) else {
            panic!("not an array");
        };
        assert_eq!(ranges.len(), 3);
        let mut next = 0;
        for r in &ranges {
            let Reply::Array(r) = r else { panic!() };
            let (first, last) = (int(&r[0]), int(&r[1]));
            assert_eq!(first, next);
            next = last + 1;
            let Reply::Array(node) = &r[2] else { panic!() };
            let port = int(&node[1]);
            let member = (port - 7000) as u8;
            assert_eq!(
                node[0],
                Reply::Bulk(Bytes::from(format!("10.0.0.{}", member + 1)))
            );
            // Every key whose slot is in the range has this member as its home.
            for key in (0..3000).map(|i| format!("key:{i}")) {
                let slot = i64::from(resp::key_slot(key.as_bytes()));
                if (first..=last).contains(&slot) {
                    assert_eq!(node::route::home(key.as_bytes(), 3), member, "{key}");
                }
            }
        }
        assert_eq!(next, 16384);
    }

    #[test]
    fn without_client_addresses_the_answer_names_the_setting() {
        let m = members(false);
        for c in [
            ClusterCommand::Slots,
            ClusterCommand::Shards,
            ClusterCommand::Nodes,
        ] {
            match answer(&view(&m), c) {
                Reply::Error(e) => assert!(e.contains("client = "), "{e}"),
                other => panic!("not an error: {other:?}"),
            }
        }
        assert_eq!(
            answer(
                &view(&m),
                ClusterCommand::KeySlot(Bytes::from_static(b"foo"))
            ),
            Reply::Integer(12182)
        );
    }

    #[test]
    fn nodes_marks_self_and_unreachable_members() {
        let m = members(true);
        let Reply::Bulk(text) = answer(&view(&m), ClusterCommand::Nodes) else {
            panic!("not a bulk string");
        };
        let text = String::from_utf8(text.to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains(" myself,master ") && lines[1].contains("10.0.0.2:7001@17001"));
        assert!(
            lines[2].contains(" master,fail ") && lines[2].ends_with("disconnected 10923-16383")
        );
        assert!(
            lines[0].starts_with(&node_name(0xabc, 0)) && lines[0].ends_with("connected 0-5461")
        );
    }
}
