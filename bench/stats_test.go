package bench

import (
	"math"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
)

// median of v; v is left as it was.
func median(v []float64) float64 { return quantile(v, 0.5) }

// medianInterval is a 95 % confidence interval for the median of v, from
// its order statistics (no assumption on the distribution): the median of
// the paired differences is as precise as this, however wide a single
// round's spread. Fewer than 8 values give their whole range.
func medianInterval(v []float64) (lo, hi float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	n := float64(len(s))
	k := max(int((n-1.96*math.Sqrt(n))/2), 0)
	return s[k], s[len(s)-1-k]
}

// quantile q of v, interpolating between the nearest ranks; v is left as
// it was.
func quantile(v []float64, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (pos-float64(i))*(s[i+1]-s[i])
}

func TestMedianInterval(t *testing.T) {
	var v []float64
	for i := 20; i >= 1; i-- {
		v = append(v, float64(i))
	}
	lo, hi := medianInterval(v)
	// 20 values: the 6th and the 15th of them bound the median at 95 %.
	assert.Equal(t, []float64{6, 15}, []float64{lo, hi})
	assert.Equal(t, 20.0, v[0], "v is left as it was")

	lo, hi = medianInterval([]float64{3, 1, 2, 7, 5, 4, 6})
	assert.Equal(t, []float64{1, 7}, []float64{lo, hi}, "too few values for less than their range")
	assert.Equal(t, 4.0, median([]float64{3, 1, 2, 7, 5, 4, 6}))
}
