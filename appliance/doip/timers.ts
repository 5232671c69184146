// DoIP timing parameters, ISO 13400-2:2019 Table 47 (values in ms). Tests may shorten them
// through the `timers` option of the client and the entity; production uses these.
export const DOIP_TIMERS = Object.freeze({
  /** time a control request (vehicle identification, routing activation, entity status) may take */
  A_DoIP_Ctrl: 2000,
  /** random delay before a vehicle announcement or an answer to a broadcast identification request */
  A_DoIP_Announce_Wait: 500,
  A_DoIP_Announce_Interval: 500,
  A_DoIP_Announce_Num: 3,
  /** time until the diagnostic message ACK/NACK */
  A_DoIP_Diagnostic_Message: 2000,
  /** a socket without any traffic is closed */
  T_TCP_General_Inactivity: 300_000,
  /** a socket that does not activate routing in this time is closed */
  T_TCP_Initial_Inactivity: 2000,
  /** wait for the alive check response */
  T_TCP_Alive_Check: 500,
  A_Processing_Time: 2000,
  A_Vehicle_Discovery_Timer: 5000,
});
export type DoipTimers = { -readonly [K in keyof typeof DOIP_TIMERS]: number };

export const doipTimers = (over?: Partial<DoipTimers>): DoipTimers => ({ ...DOIP_TIMERS, ...over });
