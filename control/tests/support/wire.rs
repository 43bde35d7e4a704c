//! Hand-written DTLS 1.2 record and handshake encoders/parsers for tests.
//!
//! Deliberately independent of `dtls-proto` and `dataplane::record`: the tests craft hostile
//! inputs (bad lengths, wrong epochs, truncated cookies) and inspect what the engine sent
//! without trusting the code under test.

pub const RECORD_HEADER_LEN: usize = 13;
pub const HANDSHAKE_HEADER_LEN: usize = 12;
pub const DTLS_1_0: u16 = 0xfeff;
pub const DTLS_1_2: u16 = 0xfefd;

pub const CT_CHANGE_CIPHER_SPEC: u8 = 20;
pub const CT_ALERT: u8 = 21;
pub const CT_HANDSHAKE: u8 = 22;
pub const CT_APPLICATION_DATA: u8 = 23;
pub const CT_HEARTBEAT: u8 = 24;

pub const HT_HELLO_REQUEST: u8 = 0;
pub const HT_CLIENT_HELLO: u8 = 1;
pub const HT_SERVER_HELLO: u8 = 2;
pub const HT_HELLO_VERIFY_REQUEST: u8 = 3;
pub const HT_NEW_SESSION_TICKET: u8 = 4;
pub const HT_CERTIFICATE: u8 = 11;
pub const HT_SERVER_KEY_EXCHANGE: u8 = 12;
pub const HT_CERTIFICATE_REQUEST: u8 = 13;
pub const HT_SERVER_HELLO_DONE: u8 = 14;
pub const HT_CERTIFICATE_VERIFY: u8 = 15;
pub const HT_CLIENT_KEY_EXCHANGE: u8 = 16;
pub const HT_FINISHED: u8 = 20;

/// Alert descriptions (RFC 5246 §7.2, RFC 6347).
pub const ALERT_CLOSE_NOTIFY: u8 = 0;
pub const ALERT_UNEXPECTED_MESSAGE: u8 = 10;
pub const ALERT_BAD_RECORD_MAC: u8 = 20;
pub const ALERT_HANDSHAKE_FAILURE: u8 = 40;
pub const ALERT_BAD_CERTIFICATE: u8 = 42;
pub const ALERT_ILLEGAL_PARAMETER: u8 = 47;
pub const ALERT_DECODE_ERROR: u8 = 50;
pub const ALERT_DECRYPT_ERROR: u8 = 51;
pub const ALERT_PROTOCOL_VERSION: u8 = 70;
pub const ALERT_INSUFFICIENT_SECURITY: u8 = 71;
pub const ALERT_NO_RENEGOTIATION: u8 = 100;

/// One record as seen in a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub content_type: u8,
    pub version: u16,
    pub epoch: u16,
    pub sequence: u64,
    pub payload: Vec<u8>,
}

impl RawRecord {
    pub fn new(content_type: u8, epoch: u16, sequence: u64, payload: Vec<u8>) -> Self {
        Self {
            content_type,
            version: DTLS_1_2,
            epoch,
            sequence,
            payload,
        }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.content_type);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes()[2..]);
        out.extend_from_slice(&(self.payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v
    }

    /// Handshake fragments in this record (only meaningful for epoch-0 handshake records).
    pub fn handshake_fragments(&self) -> Vec<RawFragment> {
        if self.content_type != CT_HANDSHAKE {
            return Vec::new();
        }
        parse_fragments(&self.payload)
    }
}

/// Splits a datagram into records. Returns the records and whether trailing bytes were left.
pub fn split_records(datagram: &[u8]) -> (Vec<RawRecord>, bool) {
    let mut out = Vec::new();
    let mut rest = datagram;
    while rest.len() >= RECORD_HEADER_LEN {
        let len = u16::from_be_bytes([rest[11], rest[12]]) as usize;
        if rest.len() < RECORD_HEADER_LEN + len {
            return (out, true);
        }
        let mut seq = [0u8; 8];
        seq[2..].copy_from_slice(&rest[5..11]);
        out.push(RawRecord {
            content_type: rest[0],
            version: u16::from_be_bytes([rest[1], rest[2]]),
            epoch: u16::from_be_bytes([rest[3], rest[4]]),
            sequence: u64::from_be_bytes(seq),
            payload: rest[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len].to_vec(),
        });
        rest = &rest[RECORD_HEADER_LEN + len..];
    }
    (out, !rest.is_empty())
}

/// Byte ranges of the records in a datagram (header included).
pub fn record_ranges(datagram: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    while datagram.len() - at >= RECORD_HEADER_LEN {
        let len = u16::from_be_bytes([datagram[at + 11], datagram[at + 12]]) as usize;
        if datagram.len() - at < RECORD_HEADER_LEN + len {
            break;
        }
        out.push(at..at + RECORD_HEADER_LEN + len);
        at += RECORD_HEADER_LEN + len;
    }
    out
}

/// One handshake message fragment (RFC 6347 §4.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFragment {
    pub msg_type: u8,
    pub length: u32,
    pub message_seq: u16,
    pub fragment_offset: u32,
    pub body: Vec<u8>,
}

impl RawFragment {
    /// A whole (unfragmented) message.
    pub fn whole(msg_type: u8, message_seq: u16, body: Vec<u8>) -> Self {
        Self {
            msg_type,
            length: body.len() as u32,
            message_seq,
            fragment_offset: 0,
            body,
        }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_with_fragment_length(out, self.body.len() as u32);
    }

    /// Encodes with an arbitrary (possibly lying) fragment_length field.
    pub fn encode_with_fragment_length(&self, out: &mut Vec<u8>, fragment_length: u32) {
        out.push(self.msg_type);
        out.extend_from_slice(&self.length.to_be_bytes()[1..]);
        out.extend_from_slice(&self.message_seq.to_be_bytes());
        out.extend_from_slice(&self.fragment_offset.to_be_bytes()[1..]);
        out.extend_from_slice(&fragment_length.to_be_bytes()[1..]);
        out.extend_from_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v
    }

    /// Splits this whole message into fragments of at most `max` body bytes.
    pub fn split(&self, max: usize) -> Vec<RawFragment> {
        assert!(max > 0);
        let mut out = Vec::new();
        let mut off = 0;
        loop {
            let end = (off + max).min(self.body.len());
            out.push(RawFragment {
                msg_type: self.msg_type,
                length: self.length,
                message_seq: self.message_seq,
                fragment_offset: self.fragment_offset + off as u32,
                body: self.body[off..end].to_vec(),
            });
            off = end;
            if off >= self.body.len() {
                return out;
            }
        }
    }
}

fn u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

/// Parses the handshake fragments of an (unprotected) handshake record payload.
pub fn parse_fragments(mut payload: &[u8]) -> Vec<RawFragment> {
    let mut out = Vec::new();
    while payload.len() >= HANDSHAKE_HEADER_LEN {
        let frag_len = u24(&payload[9..12]) as usize;
        if payload.len() < HANDSHAKE_HEADER_LEN + frag_len {
            break;
        }
        out.push(RawFragment {
            msg_type: payload[0],
            length: u24(&payload[1..4]),
            message_seq: u16::from_be_bytes([payload[4], payload[5]]),
            fragment_offset: u24(&payload[6..9]),
            body: payload[HANDSHAKE_HEADER_LEN..HANDSHAKE_HEADER_LEN + frag_len].to_vec(),
        });
        payload = &payload[HANDSHAKE_HEADER_LEN + frag_len..];
    }
    out
}

/// A datagram holding one epoch-0 handshake record with the given fragments.
pub fn handshake_datagram(sequence: u64, version: u16, fragments: &[RawFragment]) -> Vec<u8> {
    let mut payload = Vec::new();
    for f in fragments {
        f.encode_into(&mut payload);
    }
    let mut r = RawRecord::new(CT_HANDSHAKE, 0, sequence, payload);
    r.version = version;
    r.to_bytes()
}

/// A plaintext alert record.
pub fn alert_record(epoch: u16, sequence: u64, level: u8, description: u8) -> RawRecord {
    RawRecord::new(CT_ALERT, epoch, sequence, vec![level, description])
}

/// A ClientHello body (RFC 6347 §4.2.1, RFC 5246 §7.4.1.2) built field by field.
#[derive(Debug, Clone)]
pub struct ClientHelloSpec {
    pub client_version: u16,
    pub random: [u8; 32],
    pub session_id: Vec<u8>,
    pub cookie: Vec<u8>,
    pub cipher_suites: Vec<u16>,
    pub compression: Vec<u8>,
    /// (type, data)
    pub extensions: Vec<(u16, Vec<u8>)>,
    /// Overrides the cookie length byte (to lie about it).
    pub cookie_len_override: Option<u8>,
}

pub const EXT_SERVER_NAME: u16 = 0;
pub const EXT_SUPPORTED_GROUPS: u16 = 10;
pub const EXT_EC_POINT_FORMATS: u16 = 11;
pub const EXT_SIGNATURE_ALGORITHMS: u16 = 13;
pub const EXT_EXTENDED_MASTER_SECRET: u16 = 23;
pub const EXT_SESSION_TICKET: u16 = 35;
pub const EXT_RENEGOTIATION_INFO: u16 = 0xff01;

impl ClientHelloSpec {
    /// A plausible ECDHE-ECDSA / PSK ClientHello as a modern client sends it.
    pub fn typical(seed: u8) -> Self {
        let mut random = [0u8; 32];
        for (i, b) in random.iter_mut().enumerate() {
            *b = seed.wrapping_mul(31).wrapping_add(i as u8);
        }
        let groups: Vec<u8> = {
            let mut v = vec![0, 6];
            v.extend_from_slice(&[0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
            v
        };
        let sig_algs: Vec<u8> = {
            let mut v = vec![0, 8];
            v.extend_from_slice(&[0x04, 0x03, 0x05, 0x03, 0x08, 0x04, 0x04, 0x01]);
            v
        };
        Self {
            client_version: DTLS_1_2,
            random,
            session_id: Vec::new(),
            cookie: Vec::new(),
            cipher_suites: vec![
                0xc02b, 0xc02c, 0xcca9, 0xc02f, 0xc030, 0xcca8, 0x00a8, 0x00a9,
            ],
            compression: vec![0],
            extensions: vec![
                (EXT_SUPPORTED_GROUPS, groups),
                (EXT_EC_POINT_FORMATS, vec![1, 0]),
                (EXT_SIGNATURE_ALGORITHMS, sig_algs),
                (EXT_EXTENDED_MASTER_SECRET, Vec::new()),
                (EXT_RENEGOTIATION_INFO, vec![0]),
            ],
            cookie_len_override: None,
        }
    }

    pub fn body(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.client_version.to_be_bytes());
        b.extend_from_slice(&self.random);
        b.push(self.session_id.len() as u8);
        b.extend_from_slice(&self.session_id);
        b.push(self.cookie_len_override.unwrap_or(self.cookie.len() as u8));
        b.extend_from_slice(&self.cookie);
        b.extend_from_slice(&((self.cipher_suites.len() * 2) as u16).to_be_bytes());
        for s in &self.cipher_suites {
            b.extend_from_slice(&s.to_be_bytes());
        }
        b.push(self.compression.len() as u8);
        b.extend_from_slice(&self.compression);
        if !self.extensions.is_empty() {
            let mut ext = Vec::new();
            for (t, d) in &self.extensions {
                ext.extend_from_slice(&t.to_be_bytes());
                ext.extend_from_slice(&(d.len() as u16).to_be_bytes());
                ext.extend_from_slice(d);
            }
            b.extend_from_slice(&(ext.len() as u16).to_be_bytes());
            b.extend_from_slice(&ext);
        }
        b
    }

    /// The whole datagram: one epoch-0 record (version `record_version`) with message_seq 0.
    pub fn datagram(&self, record_version: u16, sequence: u64, message_seq: u16) -> Vec<u8> {
        handshake_datagram(
            sequence,
            record_version,
            &[RawFragment::whole(
                HT_CLIENT_HELLO,
                message_seq,
                self.body(),
            )],
        )
    }
}

/// The cookie from a HelloVerifyRequest body (RFC 6347 §4.2.1): version(2) cookie<0..255>.
pub fn hello_verify_cookie(body: &[u8]) -> Option<Vec<u8>> {
    let len = *body.get(2)? as usize;
    body.get(3..3 + len).map(<[u8]>::to_vec)
}
