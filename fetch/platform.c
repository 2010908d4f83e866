#include "fetch/fetch.h"
