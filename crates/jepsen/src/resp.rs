//! A minimal async RESP2 client: one connection, one request at a time.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn as_text(&self) -> Option<String> {
        match self {
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Reply::Simple(s) => Some(s.clone()),
            _ => None,
        }
    }
}

/// Why a request has no reply.
#[derive(Debug)]
pub enum CallError {
    /// The request was never sent (connect failed): it had no effect.
    NotSent(String),
    /// Sent (perhaps partly) but no reply: the outcome is unknown.
    Unknown(String),
}

pub struct Conn {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Conn {
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Conn, String> {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                let (r, w) = s.into_split();
                Ok(Conn {
                    r: BufReader::new(r),
                    w,
                })
            }
            Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
            Err(_) => Err(format!("connect {addr}: timed out")),
        }
    }

    /// Send the commands (pipelined) and read one reply per command, all within
    /// `timeout`. Any failure leaves the connection unusable (drop it).
    pub async fn call(
        &mut self,
        cmds: &[Vec<String>],
        timeout: Duration,
    ) -> Result<Vec<Reply>, String> {
        let mut out = Vec::new();
        for args in cmds {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        let fut = async {
            self.w
                .write_all(&out)
                .await
                .map_err(|e| format!("write: {e}"))?;
            let mut replies = Vec::with_capacity(cmds.len());
            for _ in cmds {
                replies.push(read_reply(&mut self.r).await?);
            }
            Ok(replies)
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err("timed out".to_string()),
        }
    }
}

/// One command on a fresh connection.
pub async fn once(addr: &str, args: &[&str], timeout: Duration) -> Result<Reply, CallError> {
    let mut c = Conn::connect(addr, timeout)
        .await
        .map_err(CallError::NotSent)?;
    let cmd: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut r = c.call(&[cmd], timeout).await.map_err(CallError::Unknown)?;
    r.pop()
        .ok_or_else(|| CallError::Unknown("no reply".to_string()))
}

fn read_reply(
    r: &mut BufReader<OwnedReadHalf>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, String>> + Send + '_>> {
    Box::pin(async move {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if line.is_empty() {
            return Err("connection closed".to_string());
        }
        if !line.ends_with(b"\r\n") || line.len() < 3 {
            return Err(format!(
                "malformed line {:?}",
                String::from_utf8_lossy(&line)
            ));
        }
        line.truncate(line.len() - 2);
        let text = String::from_utf8_lossy(&line[1..]).into_owned();
        let num = || -> Result<i64, String> {
            text.parse::<i64>()
                .map_err(|_| format!("bad number {text:?}"))
        };
        Ok(match line[0] {
            b'+' => Reply::Simple(text.clone()),
            b'-' => Reply::Error(text.clone()),
            b':' => Reply::Int(num()?),
            b'$' => {
                let n = num()?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let n = usize::try_from(n).map_err(|e| e.to_string())?;
                    if n > 64 << 20 {
                        return Err(format!("bulk of {n} bytes"));
                    }
                    let mut buf = vec![0u8; n + 2];
                    r.read_exact(&mut buf)
                        .await
                        .map_err(|e| format!("read: {e}"))?;
                    buf.truncate(n);
                    Reply::Bulk(Some(buf))
                }
            }
            b'*' => {
                let n = num()?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut v = Vec::new();
                    for _ in 0..n.min(1 << 20) {
                        v.push(read_reply(r).await?);
                    }
                    Reply::Array(Some(v))
                }
            }
            t => return Err(format!("unexpected reply type {:?}", t as char)),
        })
    })
}
