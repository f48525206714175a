"""IoU matcher with named sentinels (filled in below)."""

#: Match value of an anchor/proposal assigned to background (a negative).
BACKGROUND = -1
#: Match value of an anchor/proposal that contributes no loss.
IGNORE = -2
