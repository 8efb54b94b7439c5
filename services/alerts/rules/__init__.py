"""Alert rules, one job per module:

- ``model``: the Rule, the built-ins, validation (windows bounded per interval) and (de)serialisation
- ``measure``: a rule's value now and at every bar (rolling, for backtests)
- ``grading``: OK / WARNING / ALERT with hysteresis, and the sentence that explains a grade
- ``files``: the YAML/JSON rules file and built-in overrides
- ``stored``: rules created over gRPC, in Redis
"""

from services.alerts.rules.files import apply_overrides, load_rules_file, overrides_of
from services.alerts.rules.grading import FIRING, GRADES, explain, fmt, grade, threshold_for
from services.alerts.rules.measure import measure, series_values
from services.alerts.rules.model import (BUILTIN_IDS, CONDITIONS, KINDS, METRICS, NOTIFY, STATS_METRICS, Rule,
                                         at_interval, builtin_rules, rule_from_dict, rule_to_dict, validate_rule,
                                         window_bars)

__all__ = ["BUILTIN_IDS", "CONDITIONS", "FIRING", "GRADES", "KINDS", "METRICS", "NOTIFY", "STATS_METRICS", "Rule",
           "apply_overrides", "at_interval", "builtin_rules", "explain", "fmt", "grade", "load_rules_file",
           "measure", "overrides_of", "rule_from_dict", "rule_to_dict", "series_values", "threshold_for",
           "validate_rule", "window_bars"]
