"""Where the repository and the shared test helpers live, for tests in any subfolder."""
import os

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
