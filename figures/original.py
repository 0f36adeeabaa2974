"""Numbers reported by the original study (its report and README), for side-by-side
comparison only. They are the original's results, labelled as such wherever they appear; none
of our numbers is derived from them. Keys are the original's checkpoint milestones (%)."""

SPARSITY = {50: 65.0, 90: 94.0}  # percent, mean over shape modules
DISPERSITY = {50: 0.32, 90: 0.24}  # the original definition (not random-normalised)
IOMIN_RANGE = {90: (33.0, 72.0)}  # percent, off-diagonal IoMin between shape modules
SOURCE = ("Tracking Functional Module Development in Abstract Visual Reasoning Networks "
          "(original study), report figures line_plots and sharing_matrices")
