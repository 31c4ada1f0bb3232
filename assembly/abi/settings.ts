// The settings record: how the supervisor hands the engine its `config
// vpnmasq` options, all at once. It writes each field (u32, named after
// the UCI option: SET_TCP_TIMEOUT ↔ tcp_timeout) at settingsPtr() and
// calls applySettings(), which validates the whole record before it takes
// any of it. Times are seconds as in the config; flags 0/1.
// src/engine/abi.gen.ts gets SETTINGS_FIELDS and the EngineSettings type from here.

// @group settings
export const SETTINGS_SIZE: u32 = 96;
export const SET_TCP_TIMEOUT: u32 = 0;
export const SET_TCP_TRANSITORY_TIMEOUT: u32 = 4;
export const SET_UDP_TIMEOUT: u32 = 8;
export const SET_ICMP_TIMEOUT: u32 = 12;
export const SET_FRAG_TIMEOUT: u32 = 16;
export const SET_ESP_TIMEOUT: u32 = 20;
export const SET_ESP_INIT_TIMEOUT: u32 = 24;
export const SET_ESP_INIT_RETRIES: u32 = 28;
export const SET_IKE_TIMEOUT: u32 = 32;
export const SET_NATT_TIMEOUT: u32 = 36;
export const SET_GRE_TIMEOUT: u32 = 40;
export const SET_PARALLEL_SESSIONS: u32 = 44;
export const SET_ESP_GUESS: u32 = 48;
export const SET_MASQ_PORT_LO: u32 = 52;
export const SET_MASQ_PORT_HI: u32 = 56;
export const SET_UNREPLIED_TIMEOUT: u32 = 60;
export const SET_SRC_MAX_FLOWS: u32 = 64;      // 0: a quarter of the table, at least 1024
export const SET_SRC_MAX_IKE: u32 = 68;
export const SET_SRC_MAX_CALLS: u32 = 72;
export const SET_SRC_MAX_ESP_PENDING: u32 = 76;
export const SET_SRC_MAX_FRAGS: u32 = 80;
