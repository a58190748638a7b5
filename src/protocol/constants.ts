// Wire constants of the PostgreSQL frontend/backend protocol, as named in the PostgreSQL docs
// ("Message Formats") and src/include/libpq/pqcomm.h. Derived constants are built from the base ones.

/** Bytes of the int32 length that starts every message. */
export const LENGTH_SIZE = 4;
/** Bytes of the one-letter message code of a regular (non-startup) message. */
export const CODE_SIZE = 1;
/** A regular message header: code + length. */
export const HEADER_SIZE = CODE_SIZE + LENGTH_SIZE;

/** Request codes carried where a StartupMessage carries its protocol version (pqcomm.h). */
export const RequestCode = {
  CancelRequest: 80877102, // 1234.5678
  SSLRequest: 80877103, // 1234.5679
  GSSENCRequest: 80877104, // 1234.5680
} as const;

/** Protocol versions: major << 16 | minor. */
export const ProtocolVersion = {
  V3_0: 196608, // 3.0
  V3_2: 196610, // 3.2 (PostgreSQL 18: variable-length cancel keys)
} as const;
export const SUPPORTED_MAJOR = 3;

/** A startup-phase packet is length + code at least; PostgreSQL's MAX_STARTUP_PACKET_LENGTH is 10000
 * bytes of body, so with the length and code words the whole packet is at most 10004 (docs/protocol.md B1). */
export const MIN_STARTUP_PACKET = LENGTH_SIZE + 4;
export const MAX_STARTUP_PACKET = 10000 + LENGTH_SIZE;
/** SSLRequest and GSSENCRequest are exactly length + code. */
export const NEGOTIATION_REQUEST_SIZE = LENGTH_SIZE + 4;
/** CancelRequest: length, code, int32 pid, then the secret key: 4 bytes in 3.0, up to 256 in 3.2. */
export const CANCEL_HEADER_SIZE = LENGTH_SIZE + 4 + 4;
export const MIN_CANCEL_KEY = 4;
export const MAX_CANCEL_KEY = 256;
/** PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes; a longer user would be signed untruncated. */
export const MAX_IDENTIFIER_BYTES = 63;

/** First byte of a TLS record carrying a ClientHello: a PG17+ client with sslnegotiation=direct. */
export const TLS_HANDSHAKE_RECORD = 0x16;

/** Single-byte answers to SSLRequest / GSSENCRequest. */
export const NegotiationReply = {
  Accept: 0x53, // S
  Decline: 0x4e, // N
  Error: 0x45, // E (a pre-3.0 server, or an error it refuses to explain over plaintext)
} as const;

/** Frontend message codes the proxy reads or writes itself. */
export const FrontendCode = {
  Bind: 0x42, // B
  Close: 0x43, // C
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyFail: 0x66, // f
  Describe: 0x44, // D
  Execute: 0x45, // E
  Flush: 0x48, // H
  FunctionCall: 0x46, // F
  Parse: 0x50, // P
  Password: 0x70, // p: PasswordMessage, SASLInitialResponse, SASLResponse
  Query: 0x51, // Q
  Sync: 0x53, // S
  Terminate: 0x58, // X
} as const;

/** Terminate: a client's (or doctor's) goodbye, code and length only. Never written to. */
export const TERMINATE_MESSAGE: Readonly<Buffer> = Buffer.from([FrontendCode.Terminate, 0, 0, 0, LENGTH_SIZE]);

/** Backend message codes the proxy reads (before the splice; and the pooled relays, after it). */
export const BackendCode = {
  Authentication: 0x52, // R
  BackendKeyData: 0x4b, // K
  BindComplete: 0x32, // 2
  CloseComplete: 0x33, // 3
  CommandComplete: 0x43, // C
  CopyBothResponse: 0x57, // W
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  DataRow: 0x44, // D
  EmptyQueryResponse: 0x49, // I
  ErrorResponse: 0x45, // E
  NoData: 0x6e, // n
  ParseComplete: 0x31, // 1
  NoticeResponse: 0x4e, // N
  NegotiateProtocolVersion: 0x76, // v
  ParameterStatus: 0x53, // S
  PortalSuspended: 0x73, // s
  ReadyForQuery: 0x5a, // Z
  RowDescription: 0x54, // T
} as const;

/** Authentication request codes, the int32 after 'R'. */
export const AuthCode = {
  Ok: 0, // AuthenticationOk
  KerberosV5: 2,
  CleartextPassword: 3, // what RDS asks of an IAM user
  MD5Password: 5,
  GSS: 7,
  SSPI: 9,
  SASL: 10, // AuthenticationSASL: the mechanisms offered
  SASLContinue: 11, // AuthenticationSASLContinue: server-first-message
  SASLFinal: 12, // AuthenticationSASLFinal: server-final-message
} as const;

/** SQLSTATE codes the proxy itself reports (Appendix A, PostgreSQL Error Codes). */
export const SqlState = {
  ConnectionFailure: '08006',
  UnableToConnect: '08001', // sqlclient_unable_to_establish_sqlconnection
  ProtocolViolation: '08P01',
  FeatureNotSupported: '0A000',
  InvalidAuthorization: '28000', // invalid_authorization_specification
  InvalidPassword: '28P01', // invalid_password
  TooManyConnections: '53300',
  AdminShutdown: '57P01',
  CannotConnectNow: '57P03', // cannot_connect_now: the server is starting up or shutting down
  NameTooLong: '42622',
  DuplicatePreparedStatement: '42P05',
  InvalidSqlStatementName: '26000', // a prepared statement that does not exist
  IdleInTransactionTimeout: '25P03', // idle_in_transaction_session_timeout
  InvalidParameterValue: '22023',
} as const;
export type SqlState = (typeof SqlState)[keyof typeof SqlState];
