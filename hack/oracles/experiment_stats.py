"""Independent oracle for operator/src/controllers/experiment/stats.ts (ADR 0011).

Reads JSON cases with per-user data on stdin, writes JSON results on stdout. Everything is
computed from the raw per-user values with scipy/statsmodels, not from the sums TypeScript uses:

- SRM: scipy.stats.chisquare; the sequential test's Bayes factor as the ratio of
  scipy.stats.dirichlet_multinomial and scipy.stats.multinomial probabilities.
- CUPED: theta is the slope of an OLS fit (statsmodels) of Y on W (X, 0 for users without one)
  with one intercept per variant; the adjusted values are per-user Y - theta (W - mean W).
- The mixture likelihood ratio by numerical integration (scipy.integrate.quad) of the
  likelihood ratio over the N(0, tau^2) mixing density; the interval bound by root finding
  (scipy.optimize.brentq) on that integral.
- Holm: statsmodels.stats.multitest.multipletests(method="holm").
"""

import json
import math
import sys

import numpy as np
import statsmodels.api as sm
from scipy import integrate, optimize, stats
from statsmodels.stats.multitest import multipletests

SRM_ALPHA = 0.001


def mixture_constant(alpha):
    l = -2 * math.log(alpha)
    return l + math.log(1 + l)


def mixture_lr(d, v, tau2):
    """Lambda = integral of N(d; delta, v) / N(d; 0, v) * N(delta; 0, tau2) d delta."""
    norm = 1 / math.sqrt(2 * math.pi * tau2)

    def integrand(delta):
        # N(d; delta, v) / N(d; 0, v) times the N(0, tau2) density, written out (scipy.stats's
        # per-call overhead makes quad and brentq slow).
        return math.exp((2 * d * delta - delta * delta) / (2 * v) - delta * delta / (2 * tau2)) * norm

    # The integrand's mass sits between 0 and about d (its posterior mean); integrate around it.
    center = d * tau2 / (tau2 + v)
    spread = math.sqrt(tau2 * v / (tau2 + v))
    lo, hi = center - 40 * spread, center + 40 * spread
    val, _ = integrate.quad(integrand, lo, hi, points=[center], epsabs=0, epsrel=1e-12, limit=400)
    return val


def half_width(v, tau2, level):
    """The delta0 > 0 with Lambda(delta0) = 1/level (the interval is estimate +- delta0)."""
    target = math.log(1 / level)
    f = lambda h: math.log(mixture_lr(h, v, tau2)) - target
    hi = math.sqrt(v)
    while f(hi) < 0:
        hi *= 2
    return optimize.brentq(f, 0, hi, xtol=1e-14, rtol=1e-12)


def srm(case):
    counts = np.array([len(v["y"]) for v in case["variants"]])
    weights = np.array([v["weight"] for v in case["variants"]], dtype=float)
    probs = weights / weights.sum()
    if np.any((probs == 0) & (counts > 0)):
        return {"chiSquarePValue": 0.0, "pValue": 0.0}
    keep = probs > 0
    c, p = counts[keep], probs[keep]
    n = int(c.sum())
    if n == 0:
        return {"chiSquarePValue": 1.0, "pValue": 1.0}
    chi = stats.chisquare(c, f_exp=n * p).pvalue
    active = int(keep.sum())
    planned_total = case["planned"] * active
    concentration = max(1.0, planned_total / mixture_constant(SRM_ALPHA) - 1)
    log_bf = stats.dirichlet_multinomial.logpmf(c, concentration * p, n) - stats.multinomial.logpmf(c, n, p)
    return {"chiSquarePValue": float(chi), "pValue": float(min(1.0, math.exp(-log_bf))), "logBayesFactor": float(log_bf)}


def analyze(case):
    alpha = case["alpha"]
    planned = case["planned"]
    variants = [v for i, v in enumerate(case["variants"]) if i == 0 or v["weight"] > 0]
    ys = [np.asarray(v["y"], dtype=float) for v in variants]
    has_x = all(v.get("x") is not None for v in variants)
    out = {"srm": srm(case), "comparisons": []}

    theta = None
    if has_x and all(len(y) >= 2 for y in ys):
        ws = [np.asarray([0.0 if x is None else x for x in v["x"]], dtype=float) for v in variants]
        y = np.concatenate(ys)
        w = np.concatenate(ws)
        dummies = np.zeros((len(y), len(variants)))
        start = 0
        for i, yi in enumerate(ys):
            dummies[start : start + len(yi), i] = 1
            start += len(yi)
        fit = sm.OLS(y, np.column_stack([w, dummies])).fit()
        theta = float(fit.params[0])
        w_mean = float(w.mean())
        out["theta"] = theta

    def arm(i, cuped):
        y = ys[i]
        if cuped:
            y = y - theta * (ws[i] - w_mean)
        return float(y.mean()), float(y.var(ddof=1))

    raw = []
    for i in range(1, len(variants)):
        n_a, n_b = len(ys[0]), len(ys[i])
        if n_a < 2 or n_b < 2:
            # No estimate; Holm still counts the comparison, with p = 1.
            raw.append({"variant": variants[i]["name"], "pValue": 1.0, "missing": True})
            continue
        m_a, s_a = arm(0, False)
        m_b, s_b = arm(i, False)
        plain_var = s_a / n_a + s_b / n_b
        reduction = 0.0
        if theta is not None:
            cm_a, cs_a = arm(0, True)
            cm_b, cs_b = arm(i, True)
            cuped_var = cs_a / n_a + cs_b / n_b
            if cuped_var < plain_var:
                m_a, s_a, m_b, s_b = cm_a, cs_a, cm_b, cs_b
                reduction = 1 - cuped_var / plain_var
        v = s_a / n_a + s_b / n_b
        d = m_b - m_a
        tau2 = mixture_constant(alpha) * (s_a + s_b) / planned
        lr = mixture_lr(d, v, tau2)
        lift = m_b / m_a - 1
        # The difference's interval over the control mean (the control mean taken as known).
        v_lift = v / m_a**2
        raw.append(
            {
                "variant": variants[i]["name"],
                "lift": lift,
                "v_lift": v_lift,
                "tau2_lift": tau2 / m_a**2,
                "statistic": math.log(lr),
                "pValue": min(1.0, 1 / lr),
                "varianceReduction": reduction,
                "tau2": tau2,
                "diff": d,
                "varDiff": v,
            }
        )

    k = len(raw)
    reject, adjusted, _, _ = multipletests([r["pValue"] for r in raw], alpha=alpha, method="holm")
    order = sorted(range(k), key=lambda j: raw[j]["pValue"])
    for rank, j in enumerate(order):
        r = raw[j]
        if r.get("missing"):
            continue
        significant = bool(adjusted[j] <= alpha)
        level = alpha / (k - rank) if significant else alpha / k
        h = half_width(r["v_lift"], r["tau2_lift"], level)
        r.update(
            {
                "adjustedPValue": float(adjusted[j]),
                "holmRejects": bool(reject[j]),
                "significant": significant,
                "liftInterval": [r["lift"] - h, r["lift"] + h],
            }
        )
    out["comparisons"] = [
        {key: r[key] for key in ("variant", "lift", "liftInterval", "statistic", "pValue", "adjustedPValue", "significant", "varianceReduction", "holmRejects")}
        for r in raw
        if not r.get("missing")
    ]
    return out


def main():
    cases = json.load(sys.stdin)
    json.dump({c["id"]: analyze(c) for c in cases}, sys.stdout)


if __name__ == "__main__":
    main()
