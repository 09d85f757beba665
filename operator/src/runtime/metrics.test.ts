import { describe, expect, it } from 'vitest';
import { OperatorMetrics } from './metrics.js';

describe('experiment gauges (the dashboards read lift, interval and SRM p from them)', () => {
  it('export the last look of a running experiment and drop it when it ends', async () => {
    const m = new OperatorMetrics();
    m.setExperiment('shop', 'ab', {
      srmPValue: 0.42,
      comparisons: [
        { variant: 'v2', lift: 0.031, liftInterval: [0.012, 0.05] },
        { variant: 'v3', lift: -0.01, liftInterval: [-0.04, 0.02] },
      ],
    });
    let text = await m.registry.metrics();
    expect(text).toContain('crema_experiment_lift{namespace="shop",experiment="ab",variant="v2"} 0.031');
    expect(text).toContain(
      'crema_experiment_lift_ci_low{namespace="shop",experiment="ab",variant="v3"} -0.04',
    );
    expect(text).toContain(
      'crema_experiment_lift_ci_high{namespace="shop",experiment="ab",variant="v2"} 0.05',
    );
    expect(text).toContain('crema_experiment_srm_p_value{namespace="shop",experiment="ab"} 0.42');
    // A later look without v3 (it was stopped) leaves no stale v3 series.
    m.setExperiment('shop', 'ab', {
      srmPValue: 0.5,
      comparisons: [{ variant: 'v2', lift: 0.03, liftInterval: [0.01, 0.05] }],
    });
    text = await m.registry.metrics();
    expect(text).not.toContain('variant="v3"');
    m.dropExperiment('shop', 'ab');
    text = await m.registry.metrics();
    expect(text).not.toMatch(/crema_experiment_\w+\{/);
  });
});

describe('region floor gauge (the regions dashboard reads it)', () => {
  it('follows the floor, moves with the model reference and is removed when the region goes', async () => {
    const m = new OperatorMetrics();
    m.setRegionFloor('shop', 'west', 'drinks', 6);
    expect(await m.registry.metrics()).toContain(
      'crema_storeregion_desired_min_replicas{namespace="shop",storeregion="west",model="drinks"} 6',
    );
    m.setRegionFloor('shop', 'west', 'drinks-v2', 3);
    let text = await m.registry.metrics();
    expect(text).not.toContain('model="drinks"}');
    expect(text).toContain(
      'crema_storeregion_desired_min_replicas{namespace="shop",storeregion="west",model="drinks-v2"} 3',
    );
    m.setRegionFloor('shop', 'west', undefined, undefined);
    text = await m.registry.metrics();
    expect(text).not.toMatch(/crema_storeregion_desired_min_replicas\{/);
  });
});
