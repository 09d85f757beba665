/**
 * The duration grammar of every duration field in the CRDs (rollout step pauses, analysis
 * intervals, drift windows): a whole number of seconds, minutes or hours, e.g. 30s, 5m, 1h.
 * The operator's rollout machine and the drift rules parse with it; contracts.test.ts checks
 * the CRDs' patterns are this one.
 */

/** The CRD `pattern` of a duration field. */
export const DURATION_PATTERN = '^[0-9]+(s|m|h)$';

const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000 } as const;

/** Parses "30s", "5m", "1h" into milliseconds; RangeError naming the value otherwise. */
export function parseDurationMs(d: string): number {
  const m = new RegExp(DURATION_PATTERN).exec(d);
  if (!m) throw new RangeError(`invalid duration ${JSON.stringify(d)} (use e.g. 30s, 5m, 1h)`);
  return Number(d.slice(0, -1)) * UNIT_MS[m[1] as keyof typeof UNIT_MS];
}
