// Package pairstat summarises paired measurements (a cost with and without
// the probe, taken in turn) for the benchmarks: single rounds on this
// machine vary by tens of percent, so what they report is the median of the
// paired differences and how far that median can be trusted.
package pairstat

import (
	"math"
	"slices"
)

// Median of v; v is left as it was.
func Median(v []float64) float64 { return Quantile(v, 0.5) }

// MedianInterval is a 95 % confidence interval for the median of v, from
// its order statistics (no assumption on the distribution): the median of
// the paired differences is as precise as this, however wide a single
// round's spread. Fewer than 8 values give their whole range.
func MedianInterval(v []float64) (lo, hi float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	n := float64(len(s))
	k := max(int((n-1.96*math.Sqrt(n))/2), 0)
	return s[k], s[len(s)-1-k]
}

// Quantile q of v, interpolating between the nearest ranks; v is left as
// it was.
func Quantile(v []float64, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (pos-float64(i))*(s[i+1]-s[i])
}
