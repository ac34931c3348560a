"""Data: data sources (builders), logit projections for shifted sets, the decoded eval-set cache."""
