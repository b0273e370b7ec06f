import os
import sys

# the scripts live at the repository root and are imported as modules by the tests
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
