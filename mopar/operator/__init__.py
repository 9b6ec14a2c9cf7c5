"""Stage 4: the PartitionedModel operator: spec, status, names, object builders, API client, handlers.

Importing the package registers the Kopf handlers, so `kopf run -m mopar.operator` runs the
operator as `mopar operator` does.
"""

from mopar.operator import handlers as handlers
