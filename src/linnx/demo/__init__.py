"""``linnx demo``: a Linen classifier moves into NNX while it keeps training."""
