"""Next-period volatility forecasts and their rolling-origin track record (see docs/forecasts.md).

Pure functions over closing prices, shared by Core (GetForecast) and Alerts (the
``forecast_volatility`` rule). Three models:

- ``garch_t``: GARCH(1,1) with a constant mean and Student-t errors, fitted by PyPI ``arch``;
- ``ewma``: RiskMetrics EWMA variance, lambda 0.94, zero mean;
- ``historical``: variance of the last ``HIST_WINDOW`` returns, zero mean.

Scaling: returns are log returns in percent (100 * ln(c_t / c_t-1)), because arch's optimiser
converges badly on daily variances of order 1e-4. Variances ``h`` are therefore in percent squared;
the public results convert volatility back to fractions (0.035 = 3.5 % per bar).

No look-ahead: a forecast as of T is a function of the closes strictly before T only, and the
evaluation scores each origin with parameters fitted on returns before that origin.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from statistics import NormalDist
from dataclasses import dataclass, field

import numpy as np

MODELS = ("garch_t", "ewma", "historical")
LAMBDA = 0.94
HIST_WINDOW = 30       # bars in the rolling historical baseline
MIN_RETURNS = 250      # returns a GARCH fit needs (so MIN_HISTORY_BARS closes)
MIN_HISTORY_BARS = MIN_RETURNS + 1
FIT_WINDOW = 1000      # the estimation window: the last 1000 returns before the origin (fewer early on)
MAX_HISTORY_BARS = 5000  # Core evaluates on at most the last 5000 bars before as_of (bounds the time)
REFIT_EVERY = 20       # the evaluation refits GARCH every 20 origins and filters forward in between
BAND_P = 0.95
VARIANCE_FLOOR = 1e-8  # percent^2: a flat stretch must not make a log(0) in QLIKE


class ForecastError(ValueError):
    """The forecast cannot be made (too little history, failed fit); the message names the reason."""


@dataclass(frozen=True)
class Forecast:
    model: str
    variance: float          # next-period variance of the percent log return
    mean: float              # next-period mean of the percent log return
    lower: float             # 95 % band of the next return, as a fraction (log return / 100)
    upper: float
    params: dict[str, float] = field(default_factory=dict)
    fit_seconds: float = 0.0

    @property
    def volatility(self) -> float:
        """Next-period volatility as a fraction per bar."""
        return math.sqrt(self.variance) / 100.0


@dataclass(frozen=True)
class Record:
    """One model's rolling-origin track record."""

    model: str
    count: int
    qlike: float
    mse: float
    coverage: float
    kupiec_lr: float
    kupiec_p: float


@dataclass(frozen=True)
class Evaluation:
    records: dict[str, Record]
    dm_stat: float           # Diebold-Mariano of GARCH-t against EWMA on QLIKE; negative: GARCH better
    dm_p: float
    origins: np.ndarray      # indices into the returns: the return each forecast was scored on
    variances: dict[str, np.ndarray]   # per model, the forecast variance at each origin (percent^2)
    realised: np.ndarray     # realised percent returns at the origins
    seconds: float


def percent_returns(close: np.ndarray) -> np.ndarray:
    close = np.asarray(close, dtype=float)
    if not np.all(np.isfinite(close) & (close > 0)):
        raise ForecastError("the history holds a non-positive or missing close")
    return 100.0 * np.diff(np.log(close))


def closes_before(ts: np.ndarray, close: np.ndarray, as_of_ms: int | None) -> np.ndarray:
    """The closes of bars that opened strictly before ``as_of_ms`` (all of them when None)."""
    if as_of_ms is None:
        return np.asarray(close, dtype=float)
    return np.asarray(close[: int(np.searchsorted(ts, as_of_ms, "left"))], dtype=float)


def check_history(returns: np.ndarray) -> None:
    if len(returns) < MIN_RETURNS:
        raise ForecastError(f"needs at least MIN_HISTORY_BARS = {MIN_HISTORY_BARS} bars before as_of; "
                            f"has {len(returns) + 1 if len(returns) else 'at most 1'}")


# --- models -------------------------------------------------------------------------------
_NORMAL = NormalDist()


def _t_quantile(p: float, nu):
    """Student-t quantile (nu a number or an array); scipy is imported on first use (~70 MB), like
    arch, not when a service starts."""
    from scipy import stats

    return stats.t.ppf(p, nu)


@functools.cache
def _arch_model():
    """arch's model factory, imported on first use (the import takes about a second)."""
    from arch import arch_model
    from arch.utility.exceptions import ConvergenceWarning, StartingValueWarning

    # Filtered once for the process, not per fit: warnings.catch_warnings is not thread-safe and fits
    # run in worker threads. Non-convergence is checked on the result and raised as ForecastError.
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    warnings.filterwarnings("ignore", category=StartingValueWarning)
    return arch_model


def fit_garch(returns: np.ndarray, window: int = FIT_WINDOW) -> tuple[dict[str, float], float]:
    """GARCH(1,1)-t fitted on the last ``window`` returns: (params, conditional variance of the last
    in-sample return). Raises ForecastError naming why a fit failed."""
    sample = returns[-window:]
    model = _arch_model()(sample, mean="Constant", vol="GARCH", p=1, q=1, dist="t", rescale=False)
    with np.errstate(all="ignore"):  # the optimiser probes extreme parameters; thread-local, unlike warnings
        try:
            result = model.fit(disp="off", show_warning=False)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise ForecastError(f"the GARCH fit failed: {exc}") from None
    if result.convergence_flag != 0:
        raise ForecastError(f"the GARCH fit did not converge (optimiser code {result.convergence_flag})")
    p = result.params
    params = {"mu": float(p["mu"]), "omega": float(p["omega"]), "alpha": float(p["alpha[1]"]),
              "beta": float(p["beta[1]"]), "nu": float(p["nu"])}
    if not all(math.isfinite(v) for v in params.values()) or params["nu"] <= 2:
        raise ForecastError("the GARCH fit gave non-finite parameters or tails too heavy for a variance")
    return params, float(result.conditional_volatility[-1] ** 2)


def _garch_step(params: dict, h: float, r: float) -> float:
    e = r - params["mu"]
    return params["omega"] + params["alpha"] * e * e + params["beta"] * h


def ewma_variances(returns: np.ndarray) -> np.ndarray:
    """v[i] is the EWMA forecast of returns[i] made from returns[:i]; v[0] seeds with the mean square of
    the first HIST_WINDOW returns (a seed that peeks ahead, so the evaluation never scores origins
    inside the seed window)."""
    v = np.empty(len(returns) + 1)
    v[0] = float(np.mean(returns[:HIST_WINDOW] ** 2))
    for i, r in enumerate(returns):
        v[i + 1] = LAMBDA * v[i] + (1 - LAMBDA) * r * r
    return np.maximum(v, VARIANCE_FLOOR)


def historical_variances(returns: np.ndarray) -> np.ndarray:
    """v[i] = sample variance (ddof 1) of returns[i-HIST_WINDOW:i]; NaN before HIST_WINDOW returns."""
    v = np.full(len(returns) + 1, np.nan)
    if len(returns) >= HIST_WINDOW:
        windows = np.lib.stride_tricks.sliding_window_view(returns, HIST_WINDOW)
        v[HIST_WINDOW:] = np.maximum(windows.var(axis=1, ddof=1), VARIANCE_FLOOR)
    return v


def _band(mean: float, variance: float, nu: float | None) -> tuple[float, float]:
    """The central 95 % interval of the next return, as fractions."""
    if nu is None:
        q = _NORMAL.inv_cdf(0.5 + BAND_P / 2)
        scale = math.sqrt(variance)
    else:  # a standardised t has variance 1: scale the t quantile down by sqrt((nu-2)/nu)
        q = _t_quantile(0.5 + BAND_P / 2, nu)
        scale = math.sqrt(variance * (nu - 2) / nu)
    return float(mean - q * scale) / 100.0, float(mean + q * scale) / 100.0


def forecast(close: np.ndarray, model: str = "garch_t") -> Forecast:
    """The forecast of the return after the last close, from those closes alone."""
    returns = percent_returns(close)
    check_history(returns)
    if model == "garch_t":
        started = time.perf_counter()
        params, h_last = fit_garch(returns)
        variance = _garch_step(params, h_last, float(returns[-1]))
        seconds = time.perf_counter() - started
        lower, upper = _band(params["mu"], variance, params["nu"])
        return Forecast(model, variance, params["mu"], lower, upper, params, seconds)
    if model == "ewma":
        variance = float(ewma_variances(returns)[-1])
        params = {"lambda": LAMBDA}
    elif model == "historical":
        variance = float(historical_variances(returns)[-1])
        params = {"window": float(HIST_WINDOW)}
    else:
        raise ForecastError(f"unknown model; use one of {', '.join(MODELS)}")
    lower, upper = _band(0.0, variance, None)
    return Forecast(model, variance, 0.0, lower, upper, params)


# --- evaluation ---------------------------------------------------------------------------
def garch_path(returns: np.ndarray, start: int, refit_every: int = REFIT_EVERY
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rolling-origin GARCH-t forecasts of returns[start:]: (variance, mean, nu) per origin.

    At every ``refit_every``-th origin o the model is refitted on returns[:o] (last FIT_WINDOW of
    them); in between, the variance is filtered forward with those parameters through the returns
    observed since, so each forecast of returns[i] uses returns[:i] only. The first fit must succeed."""
    n = len(returns) - start
    h, mu, nu = np.empty(n), np.empty(n), np.empty(n)
    params, h_prev = None, 0.0
    for k in range(n):
        i = start + k
        if k % refit_every == 0:
            try:
                params, h_last = fit_garch(returns[:i])
                h_prev = _garch_step(params, h_last, float(returns[i - 1]))
            except ForecastError:
                if params is None:
                    raise
                # A refit that fails keeps the last good parameters (nothing after i is ever used).
                h_prev = _garch_step(params, h_prev, float(returns[i - 1]))
        else:
            h_prev = _garch_step(params, h_prev, float(returns[i - 1]))
        h[k], mu[k], nu[k] = h_prev, params["mu"], params["nu"]
    return h, mu, nu


def kupiec(n: int, misses: int, p: float = 1 - BAND_P) -> tuple[float, float]:
    """Kupiec's proportion-of-failures LR statistic and its chi-squared(1) p-value."""
    if n == 0:
        return math.nan, math.nan
    x = misses

    def loglik(q: float) -> float:  # binomial log-likelihood of x misses in n; 0 * log 0 taken as 0
        return ((n - x) * math.log1p(-q) if x < n else 0.0) + (x * math.log(q) if x > 0 else 0.0)

    lr = max(0.0, -2.0 * (loglik(p) - loglik(x / n)))
    return lr, math.erfc(math.sqrt(lr / 2))  # chi-square(1) survival


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray) -> tuple[float, float]:
    """DM statistic of mean(loss_a - loss_b) with a Newey-West (Bartlett) long-run variance; two-sided
    normal p-value. Negative: model a has the lower loss."""
    d = np.asarray(loss_a) - np.asarray(loss_b)
    n = len(d)
    if n < 10:
        return math.nan, math.nan
    u = d - d.mean()
    lags = int(math.floor(4 * (n / 100.0) ** (2 / 9)))
    lrv = float(u @ u) / n
    for lag in range(1, lags + 1):
        lrv += 2 * (1 - lag / (lags + 1)) * float(u[lag:] @ u[:-lag]) / n
    if lrv <= 0:
        return math.nan, math.nan
    stat = float(d.mean() / math.sqrt(lrv / n))
    return stat, math.erfc(abs(stat) / math.sqrt(2))  # two-sided normal p


def qlike_losses(variance: np.ndarray, realised: np.ndarray) -> np.ndarray:
    return np.log(variance) + realised ** 2 / variance


def _record(model: str, variance: np.ndarray, mean: np.ndarray, nu: np.ndarray | None,
            realised: np.ndarray) -> Record:
    if nu is None:
        half = _NORMAL.inv_cdf(0.5 + BAND_P / 2) * np.sqrt(variance)
    else:
        half = _t_quantile(0.5 + BAND_P / 2, nu) * np.sqrt(variance * (nu - 2) / nu)
    inside = np.abs(realised - mean) <= half
    n = len(realised)
    lr, p = kupiec(n, int(n - inside.sum()))
    return Record(model, n, float(qlike_losses(variance, realised).mean()),
                  float(np.mean((realised ** 2 - variance) ** 2)), float(inside.mean()), lr, p)


def evaluate(close: np.ndarray, refit_every: int = REFIT_EVERY) -> Evaluation:
    """Rolling-origin evaluation over the whole history: every return from MIN_RETURNS on is forecast
    from the returns before it and scored on its realised square. Needs MIN_RETURNS + 1 returns."""
    started = time.perf_counter()
    returns = percent_returns(close)
    check_history(returns)
    if len(returns) <= MIN_RETURNS:
        raise ForecastError(f"needs more than MIN_HISTORY_BARS = {MIN_HISTORY_BARS} bars to score a forecast")
    start = MIN_RETURNS
    realised = returns[start:]
    g_h, g_mu, g_nu = garch_path(returns, start, refit_every)
    variances = {"garch_t": g_h, "ewma": ewma_variances(returns)[start:-1],
                 "historical": historical_variances(returns)[start:-1]}
    zero = np.zeros_like(realised)
    records = {"garch_t": _record("garch_t", g_h, g_mu, g_nu, realised),
               "ewma": _record("ewma", variances["ewma"], zero, None, realised),
               "historical": _record("historical", variances["historical"], zero, None, realised)}
    dm, dm_p = diebold_mariano(qlike_losses(g_h, realised), qlike_losses(variances["ewma"], realised))
    return Evaluation(records, dm, dm_p, np.arange(start, len(returns)), variances, realised,
                      time.perf_counter() - started)


# --- on a calendar cadence (the Alerts rule) ------------------------------------------------
def _refits(ts: np.ndarray, step_ms: int, refit_every: int) -> np.ndarray:
    """True at the first bar of each block of ``refit_every`` bar times (blocks anchored at the epoch,
    so where refits fall depends on the bars' times only, never on where a series or a slice starts)."""
    block = np.asarray(ts, dtype=np.int64) // (step_ms * refit_every)
    return np.concatenate([[True], block[1:] != block[:-1]]) if len(block) else np.zeros(0, dtype=bool)


def _fit_at(returns: np.ndarray, i: int, window: int) -> tuple[dict, float] | None:
    """The GARCH-t fit at bar i (returns[:i] end at bar i) on at most ``window`` returns, with its
    forecast for the next return; None without MIN_RETURNS returns or when the fit fails."""
    sample = returns[max(0, i - window):i]
    if len(sample) < MIN_RETURNS:
        return None
    try:
        params, h_last = fit_garch(sample, window)
    except ForecastError:
        return None
    return params, _garch_step(params, h_last, float(sample[-1]))


def cadence_variances(ts: np.ndarray, close: np.ndarray, step_ms: int, window: int,
                      refit_every: int = REFIT_EVERY, deadline: float | None = None) -> np.ndarray:
    """v[i]: GARCH-t variance forecast (percent^2) of the return after bar i, from the closes up to bar i.

    Refitted at the first bar of each block of ``refit_every`` bar times on the last ``window``
    returns, filtered forward in between; NaN until a fit succeeds and from a failed fit to the next
    refit. ``deadline`` (time.monotonic()) stops it with TimeoutError."""
    returns = percent_returns(close)
    out = np.full(len(close), np.nan)
    fit = None
    for i, refit in enumerate(_refits(ts, step_ms, refit_every).tolist()):
        if refit:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("the backtest ran out of time; ask for a shorter range")
            fit = _fit_at(returns, i, window)
        elif fit is not None:
            fit = fit[0], _garch_step(fit[0], fit[1], float(returns[i - 1]))
        if fit is not None:
            out[i] = fit[1]
    return out


def cadence_variance_now(ts: np.ndarray, close: np.ndarray, step_ms: int, window: int,
                         refit_every: int = REFIT_EVERY) -> float:
    """cadence_variances(...)[-1] with one fit: at the last refit bar, filtered to the last bar."""
    if len(close) == 0:
        return math.nan
    returns = percent_returns(close)
    j = int(np.flatnonzero(_refits(ts, step_ms, refit_every))[-1])
    fit = _fit_at(returns, j, window)
    if fit is None:
        return math.nan
    params, h = fit
    for i in range(j + 1, len(close)):
        h = _garch_step(params, h, float(returns[i - 1]))
    return h
