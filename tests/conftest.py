import torch

# Tiny models gain nothing from threads, and on a shared 2-core machine spinning worker threads
# slow everything down; results do not depend on the thread count.
torch.set_num_threads(1)
