import datetime

from cryptolens.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CorrelationMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CORRELATION_METHOD_UNSPECIFIED: _ClassVar[CorrelationMethod]
    CORRELATION_METHOD_PEARSON: _ClassVar[CorrelationMethod]
    CORRELATION_METHOD_SPEARMAN: _ClassVar[CorrelationMethod]
CORRELATION_METHOD_UNSPECIFIED: CorrelationMethod
CORRELATION_METHOD_PEARSON: CorrelationMethod
CORRELATION_METHOD_SPEARMAN: CorrelationMethod

class WatchPricesRequest(_message.Message):
    __slots__ = ("symbols", "interval", "after")
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    interval: str
    after: str
    def __init__(self, symbols: _Optional[_Iterable[str]] = ..., interval: _Optional[str] = ..., after: _Optional[str] = ...) -> None: ...

class WatchPricesResponse(_message.Message):
    __slots__ = ("symbol", "interval", "last", "change_24h", "change_24h_from", "freshness", "data_version", "source", "snapshot", "resume_token", "write_version")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    CHANGE_24H_FIELD_NUMBER: _ClassVar[int]
    CHANGE_24H_FROM_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WRITE_VERSION_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: str
    last: float
    change_24h: float
    change_24h_from: _timestamp_pb2.Timestamp
    freshness: _common_pb2.Freshness
    data_version: int
    source: str
    snapshot: bool
    resume_token: str
    write_version: int
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[str] = ..., last: _Optional[float] = ..., change_24h: _Optional[float] = ..., change_24h_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., freshness: _Optional[_Union[_common_pb2.Freshness, _Mapping]] = ..., data_version: _Optional[int] = ..., source: _Optional[str] = ..., snapshot: _Optional[bool] = ..., resume_token: _Optional[str] = ..., write_version: _Optional[int] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("symbol", "interval", "lookback", "start", "end", "risk_free_rate", "benchmark")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    LOOKBACK_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    RISK_FREE_RATE_FIELD_NUMBER: _ClassVar[int]
    BENCHMARK_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: str
    lookback: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    risk_free_rate: float
    benchmark: str
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[str] = ..., lookback: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., risk_free_rate: _Optional[float] = ..., benchmark: _Optional[str] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("symbol", "interval", "count", "first", "last", "mean", "min", "max", "change", "volatility", "annualized_volatility", "max_drawdown", "current_drawdown", "sharpe", "sortino", "downside_deviation", "var_95", "cvar_95", "beta", "periods_per_year", "start", "end", "gaps", "data_version", "as_of", "source", "cached", "max_drawdown_time", "worst_return", "worst_return_time", "best_return", "benchmark", "coverage", "freshness")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    VOLATILITY_FIELD_NUMBER: _ClassVar[int]
    ANNUALIZED_VOLATILITY_FIELD_NUMBER: _ClassVar[int]
    MAX_DRAWDOWN_FIELD_NUMBER: _ClassVar[int]
    CURRENT_DRAWDOWN_FIELD_NUMBER: _ClassVar[int]
    SHARPE_FIELD_NUMBER: _ClassVar[int]
    SORTINO_FIELD_NUMBER: _ClassVar[int]
    DOWNSIDE_DEVIATION_FIELD_NUMBER: _ClassVar[int]
    VAR_95_FIELD_NUMBER: _ClassVar[int]
    CVAR_95_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    PERIODS_PER_YEAR_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    MAX_DRAWDOWN_TIME_FIELD_NUMBER: _ClassVar[int]
    WORST_RETURN_FIELD_NUMBER: _ClassVar[int]
    WORST_RETURN_TIME_FIELD_NUMBER: _ClassVar[int]
    BEST_RETURN_FIELD_NUMBER: _ClassVar[int]
    BENCHMARK_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: str
    count: int
    first: float
    last: float
    mean: float
    min: float
    max: float
    change: float
    volatility: float
    annualized_volatility: float
    max_drawdown: float
    current_drawdown: float
    sharpe: float
    sortino: float
    downside_deviation: float
    var_95: float
    cvar_95: float
    beta: float
    periods_per_year: float
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    gaps: _containers.RepeatedCompositeFieldContainer[_common_pb2.Gap]
    data_version: int
    as_of: _timestamp_pb2.Timestamp
    source: str
    cached: bool
    max_drawdown_time: _timestamp_pb2.Timestamp
    worst_return: float
    worst_return_time: _timestamp_pb2.Timestamp
    best_return: float
    benchmark: str
    coverage: _common_pb2.Coverage
    freshness: _common_pb2.Freshness
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[str] = ..., count: _Optional[int] = ..., first: _Optional[float] = ..., last: _Optional[float] = ..., mean: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., change: _Optional[float] = ..., volatility: _Optional[float] = ..., annualized_volatility: _Optional[float] = ..., max_drawdown: _Optional[float] = ..., current_drawdown: _Optional[float] = ..., sharpe: _Optional[float] = ..., sortino: _Optional[float] = ..., downside_deviation: _Optional[float] = ..., var_95: _Optional[float] = ..., cvar_95: _Optional[float] = ..., beta: _Optional[float] = ..., periods_per_year: _Optional[float] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., gaps: _Optional[_Iterable[_Union[_common_pb2.Gap, _Mapping]]] = ..., data_version: _Optional[int] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., cached: _Optional[bool] = ..., max_drawdown_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., worst_return: _Optional[float] = ..., worst_return_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., best_return: _Optional[float] = ..., benchmark: _Optional[str] = ..., coverage: _Optional[_Union[_common_pb2.Coverage, _Mapping]] = ..., freshness: _Optional[_Union[_common_pb2.Freshness, _Mapping]] = ...) -> None: ...

class GetTimeseriesRequest(_message.Message):
    __slots__ = ("symbol", "interval", "lookback", "start", "end", "max_points", "rolling_window")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    LOOKBACK_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    ROLLING_WINDOW_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: str
    lookback: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    max_points: int
    rolling_window: int
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[str] = ..., lookback: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_points: _Optional[int] = ..., rolling_window: _Optional[int] = ...) -> None: ...

class TimeseriesPoint(_message.Message):
    __slots__ = ("time", "close", "drawdown", "rolling_volatility")
    TIME_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    DRAWDOWN_FIELD_NUMBER: _ClassVar[int]
    ROLLING_VOLATILITY_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    close: float
    drawdown: float
    rolling_volatility: float
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., close: _Optional[float] = ..., drawdown: _Optional[float] = ..., rolling_volatility: _Optional[float] = ...) -> None: ...

class GetTimeseriesResponse(_message.Message):
    __slots__ = ("symbol", "interval", "points", "total_points", "data_version", "source", "coverage", "freshness")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: str
    points: _containers.RepeatedCompositeFieldContainer[TimeseriesPoint]
    total_points: int
    data_version: int
    source: str
    coverage: _common_pb2.Coverage
    freshness: _common_pb2.Freshness
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[str] = ..., points: _Optional[_Iterable[_Union[TimeseriesPoint, _Mapping]]] = ..., total_points: _Optional[int] = ..., data_version: _Optional[int] = ..., source: _Optional[str] = ..., coverage: _Optional[_Union[_common_pb2.Coverage, _Mapping]] = ..., freshness: _Optional[_Union[_common_pb2.Freshness, _Mapping]] = ...) -> None: ...

class GetCorrelationRequest(_message.Message):
    __slots__ = ("symbols", "interval", "lookback", "start", "end", "method")
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    LOOKBACK_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    interval: str
    lookback: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    method: CorrelationMethod
    def __init__(self, symbols: _Optional[_Iterable[str]] = ..., interval: _Optional[str] = ..., lookback: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., method: _Optional[_Union[CorrelationMethod, str]] = ...) -> None: ...

class CorrelationRow(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class GetCorrelationResponse(_message.Message):
    __slots__ = ("symbols", "rows", "count", "method", "coverage", "freshness")
    class CoverageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.Coverage
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Coverage, _Mapping]] = ...) -> None: ...
    class FreshnessEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.Freshness
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Freshness, _Mapping]] = ...) -> None: ...
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[CorrelationRow]
    count: int
    method: CorrelationMethod
    coverage: _containers.MessageMap[str, _common_pb2.Coverage]
    freshness: _containers.MessageMap[str, _common_pb2.Freshness]
    def __init__(self, symbols: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[CorrelationRow, _Mapping]]] = ..., count: _Optional[int] = ..., method: _Optional[_Union[CorrelationMethod, str]] = ..., coverage: _Optional[_Mapping[str, _common_pb2.Coverage]] = ..., freshness: _Optional[_Mapping[str, _common_pb2.Freshness]] = ...) -> None: ...

class Holding(_message.Message):
    __slots__ = ("symbol", "weight")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    weight: float
    def __init__(self, symbol: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class GetPortfolioRiskRequest(_message.Message):
    __slots__ = ("holdings", "interval", "lookback", "start", "end", "normalize")
    HOLDINGS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    LOOKBACK_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    holdings: _containers.RepeatedCompositeFieldContainer[Holding]
    interval: str
    lookback: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    normalize: bool
    def __init__(self, holdings: _Optional[_Iterable[_Union[Holding, _Mapping]]] = ..., interval: _Optional[str] = ..., lookback: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., normalize: _Optional[bool] = ...) -> None: ...

class RiskContribution(_message.Message):
    __slots__ = ("symbol", "weight", "marginal", "contribution", "contribution_pct")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MARGINAL_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_PCT_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    weight: float
    marginal: float
    contribution: float
    contribution_pct: float
    def __init__(self, symbol: _Optional[str] = ..., weight: _Optional[float] = ..., marginal: _Optional[float] = ..., contribution: _Optional[float] = ..., contribution_pct: _Optional[float] = ...) -> None: ...

class GetPortfolioRiskResponse(_message.Message):
    __slots__ = ("volatility", "annualized_volatility", "var_95", "cvar_95", "max_drawdown", "expected_return", "contributions", "count", "periods_per_year", "coverage", "freshness")
    class CoverageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.Coverage
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Coverage, _Mapping]] = ...) -> None: ...
    class FreshnessEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.Freshness
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Freshness, _Mapping]] = ...) -> None: ...
    VOLATILITY_FIELD_NUMBER: _ClassVar[int]
    ANNUALIZED_VOLATILITY_FIELD_NUMBER: _ClassVar[int]
    VAR_95_FIELD_NUMBER: _ClassVar[int]
    CVAR_95_FIELD_NUMBER: _ClassVar[int]
    MAX_DRAWDOWN_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_RETURN_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PERIODS_PER_YEAR_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    volatility: float
    annualized_volatility: float
    var_95: float
    cvar_95: float
    max_drawdown: float
    expected_return: float
    contributions: _containers.RepeatedCompositeFieldContainer[RiskContribution]
    count: int
    periods_per_year: float
    coverage: _containers.MessageMap[str, _common_pb2.Coverage]
    freshness: _containers.MessageMap[str, _common_pb2.Freshness]
    def __init__(self, volatility: _Optional[float] = ..., annualized_volatility: _Optional[float] = ..., var_95: _Optional[float] = ..., cvar_95: _Optional[float] = ..., max_drawdown: _Optional[float] = ..., expected_return: _Optional[float] = ..., contributions: _Optional[_Iterable[_Union[RiskContribution, _Mapping]]] = ..., count: _Optional[int] = ..., periods_per_year: _Optional[float] = ..., coverage: _Optional[_Mapping[str, _common_pb2.Coverage]] = ..., freshness: _Optional[_Mapping[str, _common_pb2.Freshness]] = ...) -> None: ...

class GetForecastRequest(_message.Message):
    __slots__ = ("symbol", "interval", "as_of", "model")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: str
    as_of: _timestamp_pb2.Timestamp
    model: str
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class ModelForecast(_message.Message):
    __slots__ = ("model", "volatility", "annualized_volatility", "band_lower", "band_upper", "params", "fit_seconds")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VOLATILITY_FIELD_NUMBER: _ClassVar[int]
    ANNUALIZED_VOLATILITY_FIELD_NUMBER: _ClassVar[int]
    BAND_LOWER_FIELD_NUMBER: _ClassVar[int]
    BAND_UPPER_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    FIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    volatility: float
    annualized_volatility: float
    band_lower: float
    band_upper: float
    params: _containers.ScalarMap[str, float]
    fit_seconds: float
    def __init__(self, model: _Optional[str] = ..., volatility: _Optional[float] = ..., annualized_volatility: _Optional[float] = ..., band_lower: _Optional[float] = ..., band_upper: _Optional[float] = ..., params: _Optional[_Mapping[str, float]] = ..., fit_seconds: _Optional[float] = ...) -> None: ...

class ForecastRecord(_message.Message):
    __slots__ = ("model", "count", "qlike", "mse", "coverage", "kupiec_p")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    QLIKE_FIELD_NUMBER: _ClassVar[int]
    MSE_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    KUPIEC_P_FIELD_NUMBER: _ClassVar[int]
    model: str
    count: int
    qlike: float
    mse: float
    coverage: float
    kupiec_p: float
    def __init__(self, model: _Optional[str] = ..., count: _Optional[int] = ..., qlike: _Optional[float] = ..., mse: _Optional[float] = ..., coverage: _Optional[float] = ..., kupiec_p: _Optional[float] = ...) -> None: ...

class ForecastPoint(_message.Message):
    __slots__ = ("time", "forecast", "realised")
    TIME_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    REALISED_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    forecast: float
    realised: float
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., forecast: _Optional[float] = ..., realised: _Optional[float] = ...) -> None: ...

class GetForecastResponse(_message.Message):
    __slots__ = ("symbol", "interval", "model", "target", "last_bar", "forecast", "baselines", "last_abs_return", "track_record", "dm_stat", "dm_p", "live_record", "history", "evaluation_seconds", "bars", "periods_per_year", "data_version", "source", "cached", "freshness")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    LAST_BAR_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    BASELINES_FIELD_NUMBER: _ClassVar[int]
    LAST_ABS_RETURN_FIELD_NUMBER: _ClassVar[int]
    TRACK_RECORD_FIELD_NUMBER: _ClassVar[int]
    DM_STAT_FIELD_NUMBER: _ClassVar[int]
    DM_P_FIELD_NUMBER: _ClassVar[int]
    LIVE_RECORD_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BARS_FIELD_NUMBER: _ClassVar[int]
    PERIODS_PER_YEAR_FIELD_NUMBER: _ClassVar[int]
    DATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: str
    model: str
    target: _timestamp_pb2.Timestamp
    last_bar: _timestamp_pb2.Timestamp
    forecast: ModelForecast
    baselines: _containers.RepeatedCompositeFieldContainer[ModelForecast]
    last_abs_return: float
    track_record: _containers.RepeatedCompositeFieldContainer[ForecastRecord]
    dm_stat: float
    dm_p: float
    live_record: _containers.RepeatedCompositeFieldContainer[ForecastRecord]
    history: _containers.RepeatedCompositeFieldContainer[ForecastPoint]
    evaluation_seconds: float
    bars: int
    periods_per_year: float
    data_version: int
    source: str
    cached: bool
    freshness: _common_pb2.Freshness
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[str] = ..., model: _Optional[str] = ..., target: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_bar: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., forecast: _Optional[_Union[ModelForecast, _Mapping]] = ..., baselines: _Optional[_Iterable[_Union[ModelForecast, _Mapping]]] = ..., last_abs_return: _Optional[float] = ..., track_record: _Optional[_Iterable[_Union[ForecastRecord, _Mapping]]] = ..., dm_stat: _Optional[float] = ..., dm_p: _Optional[float] = ..., live_record: _Optional[_Iterable[_Union[ForecastRecord, _Mapping]]] = ..., history: _Optional[_Iterable[_Union[ForecastPoint, _Mapping]]] = ..., evaluation_seconds: _Optional[float] = ..., bars: _Optional[int] = ..., periods_per_year: _Optional[float] = ..., data_version: _Optional[int] = ..., source: _Optional[str] = ..., cached: _Optional[bool] = ..., freshness: _Optional[_Union[_common_pb2.Freshness, _Mapping]] = ...) -> None: ...
