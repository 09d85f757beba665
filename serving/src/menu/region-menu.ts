/**
 * Regional menus and capacity in serving (ADR 0014): which drinks a store's region adds
 * (seasonal) or removes (unavailable), and the drinks per hour its stores can make. Read from
 * the file the operator's ConfigMap is projected to; a missing or bad file never refuses a
 * request: serving then answers from the full menu without a capacity bound, and says so in
 * its log and in `crema_region_menu_state`.
 */
import { readFile } from 'node:fs/promises';
import { validateRegionMenu, type RegionMenuConfig } from '../../../contracts/region-menu.js';

/** What the regions say about one store. */
export interface StoreMenu {
  /** The regions listing the store (normally one). */
  readonly regions: readonly string[];
  readonly seasonal: ReadonlySet<string>;
  readonly unavailable: ReadonlySet<string>;
  /** The smallest drinksPerHourPerStore of its regions, if any sets one. */
  readonly drinksPerHour?: number;
}

/** The menus of every region of the model, looked up per store. */
export interface RegionMenu {
  /** Changes whenever the menu does (caches of candidates key on it). */
  readonly serial: number;
  /** Items some region lists as seasonal: only stores of those regions offer them. */
  readonly regionalSeasonal: ReadonlySet<string>;
  forStore(storeId: string): StoreMenu | undefined;
}

/** Where the menu comes from: `missing` / `invalid` mean the full menu is served. */
export type RegionMenuState = 'ok' | 'missing' | 'invalid';

let serials = 0;

/** No regional differences: the full menu, no capacity bound. */
export const FULL_MENU: RegionMenu = {
  serial: 0,
  regionalSeasonal: new Set(),
  forStore: () => undefined,
};

/**
 * The lookup for a valid config. A store listed by several regions gets the union of their
 * seasonal and unavailable items and the smallest capacity; unavailable wins over seasonal.
 */
export function buildRegionMenu(config: RegionMenuConfig): RegionMenu {
  const byStore = new Map<
    string,
    { regions: string[]; seasonal: Set<string>; unavailable: Set<string>; drinksPerHour?: number }
  >();
  const regionalSeasonal = new Set<string>();
  for (const r of config.regions) {
    for (const s of r.seasonal) regionalSeasonal.add(s);
    for (const id of r.stores) {
      let m = byStore.get(id);
      if (!m) byStore.set(id, (m = { regions: [], seasonal: new Set(), unavailable: new Set() }));
      m.regions.push(r.name);
      for (const s of r.seasonal) m.seasonal.add(s);
      for (const u of r.unavailable) m.unavailable.add(u);
      if (r.drinksPerHourPerStore !== undefined)
        m.drinksPerHour = Math.min(m.drinksPerHour ?? Infinity, r.drinksPerHourPerStore);
    }
  }
  return { serial: ++serials, regionalSeasonal, forStore: (id) => byStore.get(id) };
}

/** Parses the file's text: the menu, or why it cannot be used (the full menu is served then). */
export function parseRegionMenu(text: string): { menu: RegionMenu } | { error: string } {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { error: `not JSON: ${(err as Error).message}` };
  }
  const problems = validateRegionMenu(doc);
  if (problems.length) return { error: problems.join('; ') };
  return { menu: buildRegionMenu(doc as RegionMenuConfig) };
}

/** Whether catalog item `id` is on the menu of a store with regional menu `m` (season aside). */
export function regionOffers(
  menu: RegionMenu,
  m: StoreMenu | undefined,
  id: string,
): 'yes' | 'no' | 'catalog' {
  if (m?.unavailable.has(id)) return 'no';
  if (menu.regionalSeasonal.has(id)) return m?.seasonal.has(id) ? 'yes' : 'no';
  return 'catalog';
}

export interface RegionMenuFileOptions {
  readonly path: string;
  /** How often the file is read again, ms (the kubelet updates it in place). Default 5000. */
  readonly intervalMs?: number;
  readonly log: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

/** A source of the regional menu, as build() takes it. */
export interface RegionMenuSource {
  readonly current: RegionMenu;
  readonly state: RegionMenuState;
  /** Calls `fn` with the state after every load (for the metric). */
  subscribe?(fn: (state: RegionMenuState) => void): void;
}

/** The menu from a file, read again every interval; `current` is always usable. */
export class RegionMenuFile implements RegionMenuSource {
  current: RegionMenu = FULL_MENU;
  state: RegionMenuState = 'missing';
  private readonly listeners: ((state: RegionMenuState) => void)[] = [];
  private lastText: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private started = false;

  constructor(private readonly opts: RegionMenuFileOptions) {}

  /** Reads the file now; then every interval until stop(). */
  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.opts.intervalMs ?? 5000);
    this.timer.unref();
  }

  subscribe(fn: (state: RegionMenuState) => void): void {
    this.listeners.push(fn);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Reads the file; a change of content replaces the menu (or falls back to the full menu). */
  async refresh(): Promise<void> {
    let text: string | undefined;
    try {
      text = await readFile(this.opts.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') text = `\0${(err as Error).message}`;
    }
    if (text === this.lastText && this.lastText !== undefined) return;
    if (text === undefined) {
      if (!this.started || this.state !== 'missing')
        this.opts.log.warn({ path: this.opts.path }, 'no regional menu file: serving the full menu');
      this.started = true;
      this.lastText = undefined;
      return this.set(FULL_MENU, 'missing');
    }
    this.started = true;
    this.lastText = text;
    const parsed = text.startsWith('\0') ? { error: text.slice(1) } : parseRegionMenu(text);
    if ('error' in parsed) {
      this.opts.log.warn(
        { path: this.opts.path, error: parsed.error },
        'regional menu file unusable: serving the full menu',
      );
      return this.set(FULL_MENU, 'invalid');
    }
    this.opts.log.info({ path: this.opts.path }, 'regional menu loaded');
    this.set(parsed.menu, 'ok');
  }

  private set(menu: RegionMenu, state: RegionMenuState): void {
    this.current = menu;
    this.state = state;
    for (const fn of this.listeners) fn(state);
  }
}
